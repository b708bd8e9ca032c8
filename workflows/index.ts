export { deploymentWorkflow } from './deployment.js';
