import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { deploymentWorkflowId } from '../../workflows/messages.js';
import { EXAMPLE_PARAMETERS, registerExampleTemplate, waitForRun } from '../support/fixtures.js';
import { env, eventually, startTestSystem, type TestSystem } from '../support/system.js';

/** statfs's f_type of the memory file systems (linux/magic.h), written here apart from the code that checks them. */
const MEMORY_FS = new Map([
  [0x01021994, 'tmpfs'],
  [0x858458f6, 'ramfs'],
]);
const isMemoryFs = async (dir: string) => MEMORY_FS.has((await statfs(dir)).type);

/**
 * Every text in a value, and what it encodes: byte fields (a Temporal payload's `data`: the serialized
 * value) decoded, and strings that are base64 decoded, each searched again inside (JSON within JSON), so
 * a value hidden one or more encodings deep is found whatever its alignment.
 */
function decodedTexts(value: unknown, depth = 0, into: string[] = []): string[] {
  if (depth > 6 || value === null || value === undefined) return into;
  const again = (text: string) => {
    into.push(text);
    try {
      decodedTexts(JSON.parse(text) as unknown, depth + 1, into);
    } catch {
      // not JSON: the text itself is what is searched
    }
  };
  if (value instanceof Uint8Array) {
    again(Buffer.from(value).toString('utf8'));
  } else if (typeof value === 'string') {
    into.push(value);
    if (value.length >= 8 && value.length % 4 === 0 && /^[A-Za-z0-9+/]+={0,2}$/.test(value)) again(Buffer.from(value, 'base64').toString('utf8'));
  } else if (Array.isArray(value)) {
    for (const v of value) decodedTexts(v, depth, into);
  } else if (typeof value === 'object') {
    for (const v of Object.values(value)) decodedTexts(v, depth, into);
  }
  return into;
}

interface Run {
  id: string;
  status: string;
  outputs: Record<string, unknown>;
}

/** A sensitive parameter reaches the template as a file on an in-memory mount, and nowhere else. */
describe('sensitive parameters', () => {
  let sys: TestSystem;
  const value = `s3cr3t-${randomBytes(8).toString('hex')}`;
  /** A value that is not sensitive, so it does travel in the history: what shows the search sees inside payloads. */
  const visible = `visible-${randomBytes(8).toString('hex')}`;
  const forms = [value, Buffer.from(value).toString('hex'), Buffer.from(value).toString('base64')];
  const absent = (where: string, text: string) => {
    for (const form of forms) assert.ok(!text.includes(form), `the secret appears in ${where}`);
  };

  before(async () => {
    sys = await startTestSystem();
  });
  after(async () => {
    await sys.stop();
  });

  it('is readable by the template, and absent from the API, Postgres, Temporal history and docker inspect', async () => {
    const template = await registerExampleTemplate(sys.call, {
      parameters: [...EXAMPLE_PARAMETERS, { name: 'password', type: 'string', required: true, sensitive: true }],
    });
    const created = await sys.call<{ id: string; parameters: Record<string, unknown>; sensitiveParameters: string[] }>('POST', '/v1/deployments', {
      template: { name: template },
      parameters: { message: visible, password: value, sleep_seconds: 2 },
      target: { kind: 'node', node: sys.nodeId },
    });
    assert.equal(created.status, 201);
    const id = created.body.id;
    assert.deepEqual(created.body.sensitiveParameters, ['password']);
    assert.deepEqual(created.body.parameters, { message: visible, exit_code: 0, sleep_seconds: 2 });
    absent('the create response', JSON.stringify(created.body));

    const started = await sys.call<Run>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    const inspected = await eventually('the container to run', async () => {
      const [c] = await sys.docker.listContainers({ filters: { label: [`io.glider-gun.run=${started.body.id}`] } });
      return c ? sys.docker.getContainer(c.Id).inspect() : undefined;
    });
    absent('docker inspect', JSON.stringify(inspected));
    const mount = inspected.Mounts.find((m) => m.Destination === '/secrets');
    assert.ok(mount?.Source.startsWith(`${sys.config.node.secretsDir}/`), `secrets are mounted from the node's secrets folder: ${mount?.Source}`);
    assert.equal(MEMORY_FS.get((await statfs(mount!.Source)).type), 'tmpfs', `${mount!.Source} is in memory`);
    assert.equal(mount?.RW, false);

    const run = await eventually('the run to end', async () => {
      const r = await sys.call<Run>('GET', `/v1/runs/${started.body.id}`);
      return ['succeeded', 'failed'].includes(r.body.status) ? r.body : undefined;
    });
    assert.equal(run.status, 'succeeded');
    const expected = createHash('sha256').update(`${JSON.stringify({ password: value }, null, 2)}\n`).digest('hex');
    assert.equal(run.outputs.secretsSha256, expected, 'the template read /secrets/template-secrets.json');
    assert.deepEqual(Object.keys(run.outputs.parameters as object).sort(), ['exit_code', 'message', 'sleep_seconds']);
    absent('the run outputs (template-parameters.json and TF_VAR_*)', JSON.stringify(run.outputs));
    // Removed with the container, right after the outcome is recorded.
    await eventually('the secrets file to be removed', () => Promise.resolve(existsSync(`${sys.config.node.secretsDir}/${run.id}`) ? undefined : true));

    for (const path of [`/v1/deployments/${id}`, '/v1/deployments', `/v1/runs/${run.id}`, `/v1/deployments/${id}/runs`]) {
      absent(`GET ${path}`, JSON.stringify((await sys.call('GET', path)).body));
    }

    const tables = (await sys.db.query<{ table_name: string }>(`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`)).rows;
    assert.ok(tables.length >= 6);
    for (const { table_name } of tables) {
      const { rows } = await sys.db.query<{ dump: string | null }>(`SELECT string_agg(t::text, E'\\n') AS dump FROM "${table_name}" t`);
      absent(`Postgres table ${table_name}`, rows[0]?.dump ?? '');
    }

    const { stdout } = await promisify(execFile)(env('GG_TEST_TEMPORAL_CLI'), [
      'workflow', 'show', '--workflow-id', deploymentWorkflowId(id), '--address', sys.config.temporal.address, '--output', 'json',
    ], { maxBuffer: 64 * 1024 * 1024 });
    assert.match(stdout, /executeRun/, 'the history is the one that executed the run');
    assert.doesNotMatch(stdout, /sealRunSecrets|nodePublicKey/, 'the node takes its secrets from the node API, sealed to its pinned key: none pass through the history');
    const shown = decodedTexts(JSON.parse(stdout) as unknown).join('\n');
    assert.ok(shown.includes(visible), 'the search reaches into the payloads of temporal workflow show');
    absent('the Temporal history (temporal workflow show, payloads decoded)', shown);
    // The history as Temporal stores it: each payload's data is the serialized value, whatever its encoding.
    const raw = decodedTexts(await sys.client.workflow.getHandle(deploymentWorkflowId(id)).fetchHistory()).join('\n');
    assert.ok(raw.includes(visible), 'the search reaches into the payloads of the raw history');
    absent('the raw Temporal history (payloads decoded)', raw);
  });

  it('refuses to write secrets anywhere but a memory file system', async () => {
    // Where the scratch folder is depends on the machine (/tmp is tmpfs on Debian 13): a folder is taken for
    // what statfs says it is, never for its name.
    const candidates = [env('GG_TEST_SCRATCH'), process.cwd(), os.homedir()];
    const onDisk: string[] = [];
    for (const dir of candidates) if (!(await isMemoryFs(dir))) onDisk.push(dir);
    assert.ok(onDisk[0], `one of ${candidates.join(', ')} is not in memory`);
    const secretsDir = path.join(onDisk[0], `not-memory-${randomBytes(4).toString('hex')}`);
    const disk = await startTestSystem({ env: { GLIDERGUN_SECRETS_DIR: secretsDir } });
    try {
      const template = await registerExampleTemplate(disk.call, {
        parameters: [...EXAMPLE_PARAMETERS, { name: 'password', type: 'string', required: true, sensitive: true }],
      });
      const created = await disk.call<{ id: string }>('POST', '/v1/deployments', {
        template: { name: template },
        parameters: { message: 'hi', password: value },
        target: { kind: 'node', node: disk.nodeId },
      });
      const started = await disk.call<Run>('POST', `/v1/deployments/${created.body.id}/runs`, { action: 'deploy' });
      const run = await waitForRun(disk.call, started.body.id);
      assert.equal(run.status, 'failed', JSON.stringify(run));
      assert.equal(run.reason, 'infrastructure');
      assert.match(run.message ?? '', /not a memory file system/);
      assert.equal(existsSync(path.join(secretsDir, run.id)), false, 'nothing was written there');
    } finally {
      await disk.stop();
    }
  });
});
