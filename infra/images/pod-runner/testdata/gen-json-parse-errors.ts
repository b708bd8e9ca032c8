/**
 * Writes testdata/json-parse-errors.json: inputs and what JSON.parse (V8) says about them, the reference
 * for jsparse_test.go (the outputs warning quotes JSON.parse's message). Run from infra/images/pod-runner:
 *   npx tsx testdata/gen-json-parse-errors.ts
 */
import { writeFileSync } from 'node:fs';

const bases = ['{\n  "name": "demo",\r\n  "count": 3,\n  "tags": ["a", "b"]\n}\n', '{"url":"https://x","n":1,"list":[1,2.5,-3e+2,true,false,null],"o":{"k":"v\\u00e9\\n"}}', '[{"a":[]},{}]', '"str"', '-0.5E-3', ' {"é😀":"ü"} '];
const extra = ['', ' ', '{not json', '[1,2]', '"text"', 'null', 'NaN', 'Infinity', 'undefined', '[object Object]', '\ufeff{}', '{"a":"\\x"}',
  '{"a":"\\u12g4"}', '{"a":01}', '{"a":1,}', '[1,]', '{"a":tr1}', 'x'.repeat(50), '{"key": "value", "other": wrong, "more": 1}',
  '{"a":"😀😀😀",x,"bbbbbbbbbbbbbbbbbbbbbbb"}', '{"a":\u0001}', '\u00a0{}', '{"a":"\t"}', '"\\', '{\n"a":\r\n 1 2}', '{"a":1,\r\n\r\n}',
  '\r{"a"\r:1 2}', '{"a":\n\n"\n"}', '{"a":1}\r\n\rx', '[1,\n\r\n\n\r-]', 'tr"', '{"a":t "}', '"\\é"', '"\\\u0100"', '"\\\u00ff"'];
const chars = ['"', '\\', '{', '}', '[', ']', ':', ',', ' ', 'x', '1', '-', '.', 'e', '+', '\n', '\u0001', 't', 'n', '😀', 'é'];
let seed = 42;
const rand = (n: number): number => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed % n;
};
const inputs = new Set(extra);
for (const b of bases) {
  for (let i = 0; i <= b.length; i++) inputs.add(b.slice(0, i));
  for (let k = 0; k < 150; k++) {
    const i = rand(b.length);
    const c = chars[rand(chars.length)] ?? '';
    const op = rand(3);
    inputs.add(op === 0 ? b.slice(0, i) + c + b.slice(i + 1) : op === 1 ? b.slice(0, i) + c + b.slice(i) : b.slice(0, i) + b.slice(i + 1));
  }
}
const loneSurrogate = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const vectors: { input: string; error: string }[] = [];
for (const input of inputs) {
  if (loneSurrogate.test(input)) continue; // a Go string cannot hold one
  let error = '';
  try {
    JSON.parse(input);
  } catch (err) {
    error = (err as Error).message;
  }
  vectors.push({ input, error });
}
writeFileSync(new URL('json-parse-errors.json', import.meta.url), `[\n${vectors.map((v) => JSON.stringify(v)).join(',\n')}\n]\n`);
console.log(`${vectors.length} vectors (${process.version})`);
