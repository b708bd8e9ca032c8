import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ParameterDeclaration } from '../../core/domain.js';
import { checkDeclarations, resolveParameters } from '../../core/parameters.js';

const decl = (d: Partial<ParameterDeclaration> & Pick<ParameterDeclaration, 'name' | 'type'>): ParameterDeclaration => ({
  required: false,
  sensitive: false,
  ...d,
});

describe('resolveParameters', () => {
  const declarations = [
    decl({ name: 'region', type: 'string', required: true }),
    decl({ name: 'count', type: 'integer', default: 1 }),
    decl({ name: 'ratio', type: 'number' }),
    decl({ name: 'enabled', type: 'boolean', default: false }),
    decl({ name: 'tags', type: 'object' }),
    decl({ name: 'zones', type: 'array' }),
  ];

  it('fills defaults and keeps given values', () => {
    const result = resolveParameters(declarations, { region: 'eu', ratio: 2, zones: ['a'] });
    assert.deepEqual(result, { ok: true, values: { region: 'eu', count: 1, ratio: 2, enabled: false, zones: ['a'] } });
  });

  it('accepts an integer where a number is declared, but not a fraction where an integer is', () => {
    assert.equal(resolveParameters(declarations, { region: 'eu', ratio: 3 }).ok, true);
    const result = resolveParameters(declarations, { region: 'eu', count: 1.5 });
    assert.deepEqual(result, { ok: false, problems: [{ parameter: 'count', problem: 'must be of type integer, not number' }] });
  });

  it('reports every problem at once: missing, unknown, mistyped', () => {
    const result = resolveParameters(declarations, { colour: 'red', enabled: 'yes', tags: [], zones: {} });
    assert.equal(result.ok, false);
    assert.deepEqual(!result.ok && result.problems, [
      { parameter: 'colour', problem: 'is not declared by the template' },
      { parameter: 'region', problem: 'is required' },
      { parameter: 'enabled', problem: 'must be of type boolean, not string' },
      { parameter: 'tags', problem: 'must be of type object, not array' },
      { parameter: 'zones', problem: 'must be of type array, not object' },
    ]);
  });

  it('treats null as a wrong type, not as missing', () => {
    const result = resolveParameters(declarations, { region: null });
    assert.deepEqual(result, { ok: false, problems: [{ parameter: 'region', problem: 'must be of type string, not null' }] });
  });

  it('does not treat inherited properties as given values', () => {
    const values = Object.create({ region: 'inherited' }) as Record<string, unknown>;
    const result = resolveParameters(declarations, values);
    assert.equal(result.ok, false);
  });
});

describe('checkDeclarations', () => {
  it('refuses duplicates, defaults of the wrong type and required parameters with defaults', () => {
    const problems = checkDeclarations([
      decl({ name: 'a', type: 'string' }),
      decl({ name: 'a', type: 'string' }),
      decl({ name: 'b', type: 'integer', default: 'x' }),
      decl({ name: 'c', type: 'string', required: true, default: 'y' }),
    ]);
    assert.deepEqual(problems, [
      { parameter: 'a', problem: 'is declared more than once' },
      { parameter: 'b', problem: 'default must be of type integer, not string' },
      { parameter: 'c', problem: 'is required, so it cannot have a default' },
    ]);
  });

  it('accepts a clean declaration list', () => {
    assert.deepEqual(checkDeclarations([decl({ name: 'a', type: 'object', default: { k: 1 } })]), []);
  });
});
