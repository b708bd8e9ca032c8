import type { OpenAPIRegistry } from '@asteasolutions/zod-to-openapi';
import { AUTHORS } from '../http/roles.js';
import { z } from '../zod.js';

/** The one operator route with a raw body: an upload of template files. */
export function registerSourcePaths(registry: OpenAPIRegistry, errorBody: z.ZodType, sourceSchema: z.ZodType): void {
  const error = (description: string) => ({ description, content: { 'application/json': { schema: errorBody } } });
  registry.registerPath({
    method: 'post',
    path: '/v1/template-sources',
    operationId: 'uploadTemplateSource',
    summary: 'Upload a template\'s files as a .zip or .tgz: validated, normalized and stored, or refused whole',
    description:
      'Refused (422 SOURCE_REJECTED, `details.reason` says why, `details.entry` names the entry): paths with `..` or absolute, links pointing outside or hard links, devices, FIFOs, sockets, archives inflating past the size or file-count limits (zip bombs), corrupt or empty archives. Use the returned id in a build or an ad-hoc version.',
    tags: ['builds'],
    security: [{ bearer: [] }],
    'x-roles': AUTHORS,
    request: {
      body: {
        required: true,
        content: {
          'application/zip': { schema: z.string().openapi({ format: 'binary' }) },
          'application/gzip': { schema: z.string().openapi({ format: 'binary' }) },
        },
      },
    },
    responses: {
      201: { description: 'stored', content: { 'application/json': { schema: sourceSchema } } },
      401: error('UNAUTHENTICATED'),
      403: error('FORBIDDEN'),
      413: error('Over GLIDERGUN_TEMPLATE_UPLOAD_MAX_BYTES: PAYLOAD_TOO_LARGE'),
      415: error('Not application/zip or application/gzip: UNSUPPORTED_MEDIA_TYPE'),
      422: error('Refused: SOURCE_REJECTED'),
    },
  } as never);
}

