import type { Role } from '../../core/db/tokens.js';

/** Who may do what, by role: the lists the routes name in `roles`. */
export const READERS = ['admin', 'author', 'operator', 'viewer'] as const satisfies readonly Role[];
export const AUTHORS = ['admin', 'author'] as const satisfies readonly Role[];
export const OPERATORS = ['admin', 'operator'] as const satisfies readonly Role[];
export const ADMINS = ['admin'] as const satisfies readonly Role[];
