import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { deploymentWorkflowId } from '../../workflows/messages.js';
import { EXAMPLE_PARAMETERS, registerExampleTemplate } from '../support/fixtures.js';
import { env, eventually, startTestSystem, type TestSystem } from '../support/system.js';

interface Run {
  id: string;
  status: string;
  outputs: Record<string, unknown>;
}

/** A sensitive parameter reaches the template as a file on an in-memory mount, and nowhere else. */
describe('sensitive parameters', () => {
  let sys: TestSystem;
  const value = `s3cr3t-${randomBytes(8).toString('hex')}`;
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
      parameters: { message: 'hi', password: value, sleep_seconds: 2 },
      target: { kind: 'node', node: sys.nodeId },
    });
    assert.equal(created.status, 201);
    const id = created.body.id;
    assert.deepEqual(created.body.sensitiveParameters, ['password']);
    assert.deepEqual(created.body.parameters, { message: 'hi', exit_code: 0, sleep_seconds: 2 });
    absent('the create response', JSON.stringify(created.body));

    const started = await sys.call<Run>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    const inspected = await eventually('the container to run', async () => {
      const [c] = await sys.docker.listContainers({ filters: { label: [`io.glider-gun.run=${started.body.id}`] } });
      return c ? sys.docker.getContainer(c.Id).inspect() : undefined;
    });
    absent('docker inspect', JSON.stringify(inspected));
    const mount = inspected.Mounts.find((m) => m.Destination === '/secrets');
    assert.ok(mount?.Source.startsWith('/dev/shm/'), `secrets are mounted from memory: ${mount?.Source}`);
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
    assert.match(stdout, /sealRunSecrets/, 'the history is the one that delivered the secret');
    absent('the Temporal history (temporal workflow show)', stdout);
    const raw = JSON.stringify(await sys.client.workflow.getHandle(deploymentWorkflowId(id)).fetchHistory());
    absent('the raw Temporal history', raw);
  });

  it('refuses to write secrets anywhere but a memory file system', async () => {
    const disk = await startTestSystem({ env: { GLIDERGUN_SECRETS_DIR: `${env('GG_TEST_SCRATCH')}/not-memory` } });
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
      const run = await eventually('the run to fail', async () => {
        const r = await disk.call<Run & { reason: string; message: string }>('GET', `/v1/runs/${started.body.id}`);
        return r.body.status === 'failed' ? r.body : undefined;
      });
      assert.equal(run.reason, 'infrastructure');
      assert.match(run.message, /not a memory file system/);
    } finally {
      await disk.stop();
    }
  });
});
