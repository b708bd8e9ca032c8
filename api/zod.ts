import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';

// Adds .openapi() to every zod schema; imported before any schema of the API is made.
extendZodWithOpenApi(z);

export { z };
