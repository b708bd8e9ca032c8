export { deploymentWorkflow } from './deployment.js';
export { templateBuildWorkflow } from './build.js';
