import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { HTTP_STATUS } from '../../api/errors.js';
import { ErrorCode } from '../../core/errors.js';

/** The codes of docs/api.md's error table (`| status | codes |`), with the status of their row; each code as often as it is listed. */
async function documentedCodes(): Promise<{ code: string; status: number }[]> {
  const text = await readFile(new URL('../../docs/api.md', import.meta.url), 'utf8');
  const section = text.slice(text.indexOf('\n## Errors\n'));
  const table = section.slice(section.indexOf('| status | codes |'));
  const rows = table.split('\n').slice(2);
  const found: { code: string; status: number }[] = [];
  for (const row of rows) {
    const m = /^\| (\d{3}) \| (.*) \|$/.exec(row);
    if (!m) break; // the end of the table
    // What a code's parentheses say (`details.reason`, other names) is not a code: only what is outside them.
    let outside = '';
    let depth = 0;
    for (const ch of m[2]!) {
      if (ch === '(') depth += 1;
      else if (ch === ')') depth -= 1;
      else if (depth === 0) outside += ch;
    }
    for (const [, code] of outside.matchAll(/`([^`]+)`/g)) found.push({ code: code!, status: Number(m[1]) });
  }
  return found;
}

describe("docs/api.md's error table", () => {
  it('lists every ErrorCode once, with the HTTP status the API answers it with, and nothing else', async () => {
    const documented = await documentedCodes();
    assert.ok(documented.length > 0, 'no error table found under "## Errors" in docs/api.md');
    const codes: string[] = Object.values(ErrorCode);
    const twice = documented.filter((d, i) => documented.findIndex((e) => e.code === d.code) !== i).map((d) => d.code);
    assert.deepEqual(twice, [], 'codes listed more than once');
    const missing = codes.filter((c) => !documented.some((d) => d.code === c));
    assert.deepEqual(missing, [], 'ErrorCode values missing from the table');
    const unknown = documented.filter((d) => !codes.includes(d.code)).map((d) => d.code);
    assert.deepEqual(unknown, [], 'codes in the table that ErrorCode does not have');
    const wrongStatus = documented
      .filter((d) => HTTP_STATUS[d.code as ErrorCode] !== d.status)
      .map((d) => `${d.code}: documented ${d.status}, answered ${HTTP_STATUS[d.code as ErrorCode]}`);
    assert.deepEqual(wrongStatus, [], 'codes under another status than api/errors.ts answers');
  });
});
