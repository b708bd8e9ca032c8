import type { ParameterDeclaration } from './domain.js';
import { resolveParameters, type ParameterProblem } from './parameters.js';

/**
 * How a template made from a type treats the type's parameters: the ones its deployments set (delegated), the
 * values it fixes for the others, and parameters of its own.
 */
export interface ParameterPlan {
  delegate: string[] | 'all';
  fixed: Record<string, unknown>;
  own: ParameterDeclaration[];
}

export type PlanResult =
  | { ok: true; parameters: ParameterDeclaration[]; fixed: Record<string, unknown> }
  | { ok: false; problems: ParameterProblem[] };

/**
 * The template version's declarations (delegated type parameters, then its own) and the fixed values its runs
 * always get. A type parameter that is neither delegated nor fixed takes its default; one without a default
 * must be delegated or fixed. Sensitive values cannot be fixed: they would be stored in the template.
 */
export function planParameters(typeParameters: readonly ParameterDeclaration[], plan: ParameterPlan): PlanResult {
  const problems: ParameterProblem[] = [];
  const byName = new Map(typeParameters.map((p) => [p.name, p]));
  const delegated = new Set(plan.delegate === 'all' ? typeParameters.map((p) => p.name) : plan.delegate);
  for (const name of delegated) {
    if (!byName.has(name)) problems.push({ parameter: name, problem: 'is delegated but the type does not declare it' });
  }
  for (const name of Object.keys(plan.fixed)) {
    const declared = byName.get(name);
    if (!declared) problems.push({ parameter: name, problem: 'is fixed but the type does not declare it' });
    else if (delegated.has(name)) problems.push({ parameter: name, problem: 'cannot be both delegated and fixed' });
    else if (declared.sensitive) problems.push({ parameter: name, problem: 'is sensitive: it can be delegated, never fixed in a template' });
  }
  for (const own of plan.own) {
    if (byName.has(own.name)) problems.push({ parameter: own.name, problem: 'is declared by the type already: delegate or fix it instead' });
  }
  const notDelegated = typeParameters.filter((p) => !delegated.has(p.name) && !p.sensitive);
  const fixedChecked = resolveParameters(
    notDelegated,
    Object.fromEntries(Object.entries(plan.fixed).filter(([k]) => byName.has(k) && !delegated.has(k))),
  );
  if (!fixedChecked.ok) {
    for (const p of fixedChecked.problems) {
      problems.push(p.problem === 'is required' ? { parameter: p.parameter, problem: 'has no default: delegate it or fix a value' } : p);
    }
  }
  for (const p of typeParameters) {
    if (p.sensitive && !delegated.has(p.name) && p.required) problems.push({ parameter: p.name, problem: 'is sensitive and required: it must be delegated' });
  }
  if (problems.length > 0) return { ok: false, problems };
  return {
    ok: true,
    parameters: [...typeParameters.filter((p) => delegated.has(p.name)), ...plan.own],
    fixed: fixedChecked.ok ? fixedChecked.values : {},
  };
}
