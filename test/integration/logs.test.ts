import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { scriptImage } from '../support/images.js';
import { uniqueName } from '../support/fixtures.js';
import { eventually, startTestSystem, type TestSystem } from '../support/system.js';

async function fetchLog(sys: TestSystem, runId: string, stream?: string): Promise<Buffer> {
  const res = await fetch(`${sys.api.url}/v1/runs/${runId}/logs${stream ? `?stream=${encodeURIComponent(stream)}` : ''}`, {
    headers: { authorization: `Bearer ${sys.tokens.viewer}` },
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
  return Buffer.from(await res.arrayBuffer());
}

/** A run's stdout and stderr are kept, byte for byte, with sensitive values masked. */
describe('run logs', () => {
  let sys: TestSystem;
  before(async () => {
    sys = await startTestSystem();
  });
  after(async () => {
    await sys.stop();
  });

  async function runScript(script: string, parameters: unknown[] = [], values: Record<string, unknown> = {}) {
    const image = await scriptImage(sys.docker, script);
    const name = uniqueName('logs');
    await sys.call('POST', '/v1/templates', { name });
    await sys.call('POST', `/v1/templates/${name}/versions`, { image, parameters });
    const dep = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name }, parameters: values, target: { kind: 'node', node: sys.nodeId } });
    const run = await sys.call<{ id: string }>('POST', `/v1/deployments/${dep.body.id}/runs`, { action: 'deploy' });
    return eventually('the run to end', async () => {
      const r = await sys.call<{ id: string; status: string; exitCode: number }>('GET', `/v1/runs/${run.body.id}`);
      return ['succeeded', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined;
    });
  }

  it('keeps long lines, non-UTF-8 bytes, a last line without newline and a burst, in order per stream', async () => {
    const run = await runScript(`#!/bin/sh
head -c 40000 /dev/zero | tr '\\0' 'x'; echo
printf 'bytes:\\377\\376\\001\\n'
seq 1 100000
seq 1 500 | sed 's/^/err /' >&2
printf 'no newline at the end'
`);
    assert.equal(run.status, 'succeeded');
    const stdout = await fetchLog(sys, run.id, 'stdout');
    const seq = Array.from({ length: 100_000 }, (_, i) => `${i + 1}\n`).join('');
    const expected = Buffer.concat([
      Buffer.from(`${'x'.repeat(40000)}\n`),
      Buffer.from([...Buffer.from('bytes:'), 0xff, 0xfe, 0x01, 0x0a]),
      Buffer.from(seq),
      Buffer.from('no newline at the end'),
    ]);
    assert.equal(stdout.length, expected.length);
    assert.ok(stdout.equals(expected), 'stdout is stored byte for byte');
    const stderr = (await fetchLog(sys, run.id, 'stderr')).toString();
    assert.equal(stderr, Array.from({ length: 500 }, (_, i) => `err ${i + 1}\n`).join(''));
    const both = await fetchLog(sys, run.id);
    assert.equal(both.length, stdout.length + stderr.length);
  });

  it('masks sensitive values in the stored log, even when printed in pieces', async () => {
    const secret = `pw-${randomBytes(6).toString('hex')}`;
    const run = await runScript(
      `#!/bin/sh
pw=$(sed -n 's/.*"password": "\\(.*\\)".*/\\1/p' /secrets/template-secrets.json)
echo "the password is $pw"
echo "to stderr: $pw" >&2
first=$(echo "$pw" | cut -c1-5); rest=$(echo "$pw" | cut -c6-)
printf '%s' "$first"; sleep 0.5; printf '%s\\n' "$rest"
echo "length: \${#pw}"
`,
      [{ name: 'password', type: 'string', required: true, sensitive: true }],
      { password: secret },
    );
    assert.equal(run.status, 'succeeded');
    const stdout = (await fetchLog(sys, run.id, 'stdout')).toString();
    assert.equal(stdout, `the password is ***\n***\nlength: ${secret.length}\n`);
    assert.equal((await fetchLog(sys, run.id, 'stderr')).toString(), 'to stderr: ***\n');
    const { rows } = await sys.db.query<{ dump: string }>(`SELECT string_agg(encode(data, 'escape'), '') AS dump FROM run_log_chunks WHERE run_id = $1`, [run.id]);
    assert.ok(!rows[0]!.dump.includes(secret));
  });

  it('streams the log live over Server-Sent Events, ending when the run ends, and resumes from an event id', async () => {
    const image = await scriptImage(sys.docker, '#!/bin/sh\nfor i in 1 2 3 4 5 6; do echo "line $i"; sleep 0.4; done\necho done >&2\n');
    const name = uniqueName('follow');
    await sys.call('POST', '/v1/templates', { name });
    await sys.call('POST', `/v1/templates/${name}/versions`, { image });
    const dep = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name }, target: { kind: 'node', node: sys.nodeId } });
    const run = await sys.call<{ id: string }>('POST', `/v1/deployments/${dep.body.id}/runs`, { action: 'deploy' });
    const res = await fetch(`${sys.api.url}/v1/runs/${run.body.id}/logs?follow=true`, { headers: { authorization: `Bearer ${sys.tokens.viewer}` } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
    const events: { event: string; id?: string; data: { seq?: number; stream?: string; text?: string; status?: string }; at: number }[] = [];
    let buffer = '';
    for await (const piece of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += Buffer.from(piece).toString('utf8');
      let end: number;
      while ((end = buffer.indexOf('\n\n')) !== -1) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (block.startsWith(':')) continue;
        const fields = Object.fromEntries(block.split('\n').map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]));
        events.push({ event: fields.event!, id: fields.id, data: JSON.parse(fields.data!) as never, at: Date.now() });
      }
    }
    const logs = events.filter((e) => e.event === 'log');
    const last = events[events.length - 1]!;
    assert.equal(last.event, 'end');
    assert.equal(last.data.status, 'succeeded');
    assert.equal(logs.filter((e) => e.data.stream === 'stdout').map((e) => e.data.text).join(''), [1, 2, 3, 4, 5, 6].map((i) => `line ${i}\n`).join(''));
    assert.ok(last.at - logs[0]!.at > 1000, 'the first lines arrived while the run was still going');
    // Resuming after the second event sends only what came after it.
    const resumed = await fetch(`${sys.api.url}/v1/runs/${run.body.id}/logs?follow=true&from=${logs[1]!.id}`, {
      headers: { authorization: `Bearer ${sys.tokens.viewer}` },
    });
    const text = await resumed.text();
    assert.equal((text.match(/^event: log$/gm) ?? []).length, logs.length - 2);
    assert.match(text, /event: end/);
  });

  it('stores files the template writes in /logs as they grow, masked, never following links', async () => {
    const secret = `pw-${randomBytes(6).toString('hex')}`;
    const image = await scriptImage(
      sys.docker,
      `#!/bin/sh
pw=$(sed -n 's/.*"password": "\\(.*\\)".*/\\1/p' /secrets/template-secrets.json)
ln -s /etc/passwd /logs/host-file
mkdir /logs/sub && echo hidden > /logs/sub/nested.log
echo "first line" >> /logs/app.log
sleep 6
echo "password $pw" >> /logs/app.log
echo "last line" >> /logs/app.log
`,
    );
    const name = uniqueName('files');
    await sys.call('POST', '/v1/templates', { name });
    await sys.call('POST', `/v1/templates/${name}/versions`, { image, parameters: [{ name: 'password', type: 'string', required: true, sensitive: true }] });
    const dep = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name }, parameters: { password: secret }, target: { kind: 'node', node: sys.nodeId } });
    const run = await sys.call<{ id: string }>('POST', `/v1/deployments/${dep.body.id}/runs`, { action: 'deploy' });
    // Stored while the run goes: the first line is there before the run ends (6 s later: room for a loaded CI machine).
    await eventually('the first file line to be stored while the run is going', async () => {
      const [r, chunks] = await Promise.all([
        sys.call<{ status: string }>('GET', `/v1/runs/${run.body.id}`),
        sys.db.query(`SELECT 1 FROM run_log_chunks WHERE run_id = $1 AND stream = 'file:app.log'`, [run.body.id]),
      ]);
      assert.ok(['pending', 'running'].includes(r.body.status), 'the run ended before its file was stored');
      return chunks.rowCount ? true : undefined;
    });
    await eventually('the run to end', async () => {
      const r = await sys.call<{ status: string }>('GET', `/v1/runs/${run.body.id}`);
      return r.body.status === 'succeeded' ? r : undefined;
    });
    assert.equal((await fetchLog(sys, run.body.id, 'file:app.log')).toString(), 'first line\npassword ***\nlast line\n');
    const streams = await sys.db.query<{ stream: string }>('SELECT DISTINCT stream FROM run_log_chunks WHERE run_id = $1 ORDER BY stream', [run.body.id]);
    assert.deepEqual(streams.rows.map((r) => r.stream), ['file:app.log'], 'no link followed, no sub-folder read');
  });

  it('answers 404 for the log of an unknown run', async () => {
    const res = await sys.call<{ code: string }>('GET', '/v1/runs/run-aaaaaaaaaaaa/logs');
    assert.equal(res.status, 404);
    assert.equal(res.body.code, 'RUN_NOT_FOUND');
  });
});

describe('the per-run log cap', () => {
  let sys: TestSystem;
  before(async () => {
    sys = await startTestSystem({ env: { GLIDERGUN_LOG_MAX_BYTES: '2048' } });
  });
  after(async () => {
    await sys.stop();
  });

  it('keeps the first bytes of each stream, marks where it cut, and the run is not affected', async () => {
    const image = await scriptImage(sys.docker, "#!/bin/sh\nhead -c 5000 /dev/zero | tr '\\0' a\necho short >&2\n");
    const name = uniqueName('cap');
    await sys.call('POST', '/v1/templates', { name });
    await sys.call('POST', `/v1/templates/${name}/versions`, { image });
    const dep = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name }, target: { kind: 'node', node: sys.nodeId } });
    const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${dep.body.id}/runs`, { action: 'deploy' });
    const run = await eventually('the run to end', async () => {
      const r = await sys.call<{ id: string; status: string }>('GET', `/v1/runs/${started.body.id}`);
      return ['succeeded', 'failed'].includes(r.body.status) ? r.body : undefined;
    });
    assert.equal(run.status, 'succeeded');
    const stdout = (await fetchLog(sys, run.id, 'stdout')).toString();
    assert.equal(stdout.slice(0, 2048), 'a'.repeat(2048));
    assert.match(stdout.slice(2048), /^\n\[glider-gun: stdout cut here: over 2048 bytes; the rest was not kept\]\n$/);
    assert.equal((await fetchLog(sys, run.id, 'stderr')).toString(), 'short\n');
  });
});
