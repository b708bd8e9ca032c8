import type { ParameterDeclaration, ParameterType } from './domain.js';

export interface ParameterProblem {
  parameter: string;
  problem: string;
}

function typeOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number' && Number.isInteger(value)) return 'integer';
  return typeof value;
}

export function matchesType(value: unknown, type: ParameterType): boolean {
  const actual = typeOf(value);
  switch (type) {
    case 'number':
      return actual === 'number' || actual === 'integer';
    case 'object':
      return actual === 'object';
    default:
      return actual === type;
  }
}

/** Problems in a template's own declarations (duplicate names, defaults of the wrong type). */
export function checkDeclarations(declarations: readonly ParameterDeclaration[]): ParameterProblem[] {
  const problems: ParameterProblem[] = [];
  const seen = new Set<string>();
  for (const d of declarations) {
    if (seen.has(d.name)) problems.push({ parameter: d.name, problem: 'is declared more than once' });
    seen.add(d.name);
    if (d.default !== undefined) {
      if (d.required) problems.push({ parameter: d.name, problem: 'is required, so it cannot have a default' });
      if (!matchesType(d.default, d.type)) {
        problems.push({ parameter: d.name, problem: `default must be of type ${d.type}, not ${typeOf(d.default)}` });
      }
    }
  }
  return problems;
}

/**
 * Validates values given for a deployment against the template's declarations and fills in defaults.
 * Unknown names, missing required values and values of the wrong type are all reported at once.
 */
export function resolveParameters(
  declarations: readonly ParameterDeclaration[],
  values: Readonly<Record<string, unknown>>,
): { ok: true; values: Record<string, unknown> } | { ok: false; problems: ParameterProblem[] } {
  const problems: ParameterProblem[] = [];
  const byName = new Map(declarations.map((d) => [d.name, d]));
  for (const name of Object.keys(values)) {
    if (!byName.has(name)) problems.push({ parameter: name, problem: 'is not declared by the template' });
  }
  const resolved: Record<string, unknown> = {};
  for (const d of declarations) {
    const value = Object.hasOwn(values, d.name) ? values[d.name] : undefined;
    if (value === undefined) {
      if (d.required) problems.push({ parameter: d.name, problem: 'is required' });
      else if (d.default !== undefined) resolved[d.name] = d.default;
      continue;
    }
    if (!matchesType(value, d.type)) {
      problems.push({ parameter: d.name, problem: `must be of type ${d.type}, not ${typeOf(value)}` });
      continue;
    }
    resolved[d.name] = value;
  }
  return problems.length > 0 ? { ok: false, problems } : { ok: true, values: resolved };
}
