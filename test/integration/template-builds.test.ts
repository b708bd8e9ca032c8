/**
 * Template types, builds and versions end to end, on the real registry the test run starts and a real git
 * server (`git daemon`) made here: a template built from a .tgz, a .zip and a git repository, pushed, deployed
 * and run; a deployment pinned to version 1 until upgraded; a failing and a cancelled build; ad-hoc templates.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pushImageTo } from '../../infra/dev/kubernetes.js';
import { freePort } from '../../infra/dev/ports.js';
import { gitRepoOf, tgzOf, zipOf, type Files } from '../support/archives.js';
import { uniqueName, waitForRun, type RunBody } from '../support/fixtures.js';
import { env, eventually, images, kubernetesEnv, noCluster, startTestSystem, type TestSystem } from '../support/system.js';

interface Build {
  id: string;
  status: string;
  reason: string | null;
  message: string | null;
  version: number | null;
  image: string | null;
  sourceId: string | null;
}
type Run = RunBody;

const mainSh = (label: string) =>
  `echo "template ${label} says $(cat /template/message.txt) for $1"\n` +
  `printf '{"label":"%s","message":"%s","params":%s}' "${label}" "$(cat /template/message.txt)" "$(cat /state/template-parameters.json)" > /state/outputs.json\n`;

const TYPE_PARAMETERS = [
  { name: 'greeting', type: 'string', required: true },
  { name: 'region', type: 'string', default: 'eu' },
  { name: 'token', type: 'string', sensitive: true },
];

describe('template types, builds and versions', { skip: noCluster }, () => {
  let sys: TestSystem;
  let baseImage: string;
  let type: string;
  let gitDaemon: ChildProcess | undefined;
  let gitRoot: string;
  let gitPort: number;

  const raw = (method: string, url: string, body: Buffer, contentType: string, token = sys.tokens.author) =>
    fetch(`${sys.api.url}${url}`, { method, body, headers: { authorization: `Bearer ${token}`, 'content-type': contentType } });

  async function upload(archive: Buffer, contentType: string): Promise<string> {
    const res = await raw('POST', '/v1/template-sources', archive, contentType);
    const body = (await res.json()) as { id: string };
    assert.equal(res.status, 201, JSON.stringify(body));
    return body.id;
  }

  async function build(template: string, body: Record<string, unknown>): Promise<Build> {
    const started = await sys.call<Build>('POST', `/v1/templates/${template}/builds`, body);
    assert.equal(started.status, 202, JSON.stringify(started.body));
    return eventually(`build ${started.body.id} to end`, async () => {
      const b = await sys.call<Build>('GET', `/v1/builds/${started.body.id}`);
      return ['succeeded', 'failed', 'cancelled'].includes(b.body.status) ? b.body : undefined;
    }, 180_000);
  }

  async function buildLog(id: string): Promise<string> {
    const res = await fetch(`${sys.api.url}/v1/builds/${id}/logs`, { headers: { authorization: `Bearer ${sys.tokens.admin}` } });
    return res.text();
  }

  async function runOnce(deploymentId: string, action = 'deploy'): Promise<Run> {
    const started = await sys.call<Run>('POST', `/v1/deployments/${deploymentId}/runs`, { action });
    assert.equal(started.status, 202, JSON.stringify(started.body));
    return waitForRun(sys.call, started.body.id);
  }

  async function pullImage(ref: string): Promise<void> {
    const stream = await sys.docker.pull(ref);
    await new Promise<void>((resolve, reject) => sys.docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve())));
  }

  async function newTemplate(): Promise<string> {
    const name = uniqueName('built');
    assert.equal((await sys.call('POST', '/v1/templates', { name })).status, 201);
    return name;
  }

  async function newType(image: string, extra: Record<string, unknown> = {}): Promise<string> {
    const name = uniqueName('shell');
    assert.equal((await sys.call('POST', '/v1/template-types', { name, description: 'runs /template/main.sh' })).status, 201);
    const v = await sys.call('POST', `/v1/template-types/${name}/versions`, { image, parameters: TYPE_PARAMETERS, outputs: [{ name: 'label' }], ...extra });
    assert.equal(v.status, 201, JSON.stringify(v.body));
    return name;
  }

  const files = (label: string, extra: Files = {}): Files => ({
    'main.sh': { content: mainSh(label), mode: 0o755 },
    'message.txt': `hello from ${label}`,
    ...extra,
  });
  const plan = { delegate: ['greeting', 'token'], fixed: { region: 'us' }, own: [{ name: 'size', type: 'integer', default: 1 }] };

  before(async () => {
    // Kubernetes too: ad-hoc templates must run on both adapters.
    sys = await startTestSystem({ builder: true, env: await kubernetesEnv() });
    baseImage = await pushImageTo(env('GG_TEST_REGISTRY'), images.shellType);
    type = await newType(baseImage);
    gitRoot = await mkdtemp(path.join(os.tmpdir(), 'gg-git-server-'));
    await gitRepoOf({ 'templates/hello/main.sh': { content: mainSh('git'), mode: 0o755 }, 'templates/hello/message.txt': 'hello from git', 'README': 'x' }, path.join(gitRoot, 'repo.git'));
    gitPort = await freePort();
    gitDaemon = spawn('git', ['daemon', '--reuseaddr', `--base-path=${gitRoot}`, '--export-all', `--port=${gitPort}`, '--listen=127.0.0.1', gitRoot], { stdio: 'ignore' });
  });
  after(async () => {
    gitDaemon?.kill();
    await rm(gitRoot, { recursive: true, force: true });
    await sys.stop();
  });

  it('builds a template from a .tgz, pushes it by digest, and a deployment runs it with the fixed and delegated parameters', async () => {
    const template = await newTemplate();
    const sourceId = await upload(await tgzOf(files('v1')), 'application/gzip');
    const b = await build(template, { type: { name: type, version: 1 }, source: { kind: 'upload', sourceId }, parameters: plan });
    assert.equal(b.status, 'succeeded', `${b.message} ${await buildLog(b.id)}`);
    assert.equal(b.version, 1);
    assert.match(b.image ?? '', new RegExp(`^${env('GG_TEST_REGISTRY')}/glider-gun/templates/${template}@sha256:[0-9a-f]{64}$`));
    const log = await buildLog(b.id);
    assert.match(log, /building FROM/);
    assert.match(log, /pushed /);
    const version = await sys.call<{ image: string; parameters: { name: string }[]; origin: { fixedParameters: object; buildId: string } }>(
      'GET',
      `/v1/templates/${template}/versions/1`,
    );
    assert.equal(version.body.image, b.image);
    assert.deepEqual(version.body.parameters.map((p) => p.name), ['greeting', 'token', 'size']);
    assert.deepEqual(version.body.origin.fixedParameters, { region: 'us' });
    assert.equal(version.body.origin.buildId, b.id);
    // The builder leaves nothing on the engine: the image is read back from the registry.
    await pullImage(b.image!);
    try {
      const labels = (await sys.docker.getImage(b.image!).inspect()).Config.Labels;
      assert.equal(labels['io.glider-gun.template'], template);
      assert.equal(labels['io.glider-gun.template-version'], '1');
      assert.match(labels['io.glider-gun.source-digest'] ?? '', /^sha256:[0-9a-f]{64}$/);
    } finally {
      await sys.docker.getImage(b.image!).remove().catch(() => undefined);
    }

    const refused = await sys.call<{ code: string }>('POST', '/v1/deployments', { template: { name: template }, parameters: { greeting: 'hi', region: 'mars' }, target: { kind: 'node', node: sys.nodeId } });
    assert.equal(refused.status, 422, 'a fixed parameter cannot be set by a deployment');
    const d = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name: template }, parameters: { greeting: 'hi', token: 's3cret-token' }, target: { kind: 'node', node: sys.nodeId } });
    assert.equal(d.status, 201, JSON.stringify(d.body));
    const run = await runOnce(d.body.id);
    assert.equal(run.status, 'succeeded', run.message ?? '');
    assert.deepEqual(run.outputs, { label: 'v1', message: 'hello from v1', params: { greeting: 'hi', region: 'us', size: 1 } });
  });

  it('keeps a deployment on version 1 after version 2 is built from a .zip, until it is upgraded', async () => {
    const template = await newTemplate();
    const v1 = await build(template, { type: { name: type, version: 1 }, source: { kind: 'upload', sourceId: await upload(await tgzOf(files('v1')), 'application/gzip') }, parameters: plan });
    assert.equal(v1.status, 'succeeded', v1.message ?? '');
    const d = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name: template }, parameters: { greeting: 'hi' }, target: { kind: 'node', node: sys.nodeId } });
    assert.equal((await runOnce(d.body.id)).outputs?.label, 'v1');

    const v2 = await build(template, {
      type: { name: type, version: 1 },
      source: { kind: 'upload', sourceId: await upload(await zipOf(files('v2')), 'application/zip') },
      parameters: { ...plan, own: [...plan.own, { name: 'color', type: 'string', required: true }] },
    });
    assert.equal(v2.status, 'succeeded', v2.message ?? '');
    assert.equal(v2.version, 2);
    assert.equal((await runOnce(d.body.id)).outputs?.label, 'v1', 'pinned: still version 1');

    // While a run is active (pending: no node worker takes it), the deployment keeps its version. The last
    // run's container is removed first (by the node worker, just after the run's outcome was recorded).
    await eventually('the last run\'s container to be removed', async () => {
      const left = await sys.docker.listContainers({ all: true, filters: { label: [`io.glider-gun.deployment=${d.body.id}`] } });
      return left.length === 0 ? true : undefined;
    });
    await sys.stopNodeWorker();
    try {
      const pending = await sys.call<Run>('POST', `/v1/deployments/${d.body.id}/runs`, { action: 'deploy' });
      const busy = await sys.call<{ code: string }>('POST', `/v1/deployments/${d.body.id}/upgrade`, { version: 2, parameters: { greeting: 'hey', color: 'red' } });
      assert.equal(busy.status, 409);
      assert.equal(busy.body.code, 'RUN_IN_PROGRESS');
      assert.equal((await sys.call('POST', `/v1/runs/${pending.body.id}/cancel`)).status, 202);
      await eventually('the pending run to end', async () => ((await sys.call<Run>('GET', `/v1/runs/${pending.body.id}`)).body.status === 'cancelled' ? true : undefined));
    } finally {
      await sys.startNodeWorker();
    }

    const bad = await sys.call<{ code: string }>('POST', `/v1/deployments/${d.body.id}/upgrade`, {});
    assert.equal(bad.status, 422, 'color is required by version 2: the current parameters do not fit');
    assert.equal(bad.body.code, 'INVALID_PARAMETERS');
    assert.equal((await sys.call<{ template: { version: number } }>('GET', `/v1/deployments/${d.body.id}`)).body.template.version, 1, 'nothing changed');
    const up = await sys.call<{ template: { version: number } }>('POST', `/v1/deployments/${d.body.id}/upgrade`, { version: 2, parameters: { greeting: 'hey', size: 3, color: 'red' } });
    assert.equal(up.status, 200, JSON.stringify(up.body));
    assert.equal(up.body.template.version, 2);
    const after2 = await runOnce(d.body.id);
    assert.deepEqual(after2.outputs, { label: 'v2', message: 'hello from v2', params: { greeting: 'hey', region: 'us', size: 3, color: 'red' } });
  });

  it('builds from a git repository at a branch, a tag and a folder, recording the commit', async () => {
    const template = await newTemplate();
    const url = `git://127.0.0.1:${gitPort}/repo.git`;
    const b = await build(template, { type: { name: type, version: 1 }, source: { kind: 'git', url, ref: 'v1', subdir: 'templates/hello' }, parameters: plan });
    assert.equal(b.status, 'succeeded', `${b.message} ${await buildLog(b.id)}`);
    const version = await sys.call<{ origin: { source: { kind: string; commit: string; url: string } } }>('GET', `/v1/templates/${template}/versions/1`);
    assert.equal(version.body.origin.source.kind, 'git');
    assert.match(version.body.origin.source.commit, /^[0-9a-f]{40}$/);
    const d = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name: template }, parameters: { greeting: 'yo' }, target: { kind: 'node', node: sys.nodeId } });
    assert.equal((await runOnce(d.body.id)).outputs?.message, 'hello from git');

    const refused = await sys.call<{ code: string; details: { reason: string } }>('POST', `/v1/templates/${template}/builds`, {
      type: { name: type, version: 1 },
      source: { kind: 'git', url: 'ext::sh -c touch% /tmp/pwned', ref: 'main' },
    });
    assert.equal(refused.status, 422);
    assert.equal(refused.body.code, 'SOURCE_REJECTED');
    const missingRef = await build(template, { type: { name: type, version: 1 }, source: { kind: 'git', url, ref: 'no-such-branch' }, parameters: plan });
    assert.equal(missingRef.status, 'failed');
    assert.equal(missingRef.reason, 'source-rejected');
  });

  it('fails a build whose base image cannot be had, keeping its log and making no version', async () => {
    const template = await newTemplate();
    const broken = await newType(`${env('GG_TEST_REGISTRY')}/glider-gun/no-such-base:1`);
    const b = await build(template, { type: { name: broken, version: 1 }, source: { kind: 'upload', sourceId: await upload(await tgzOf(files('x')), 'application/gzip') }, parameters: plan });
    assert.equal(b.status, 'failed');
    assert.equal(b.reason, 'build-failed');
    assert.ok((await buildLog(b.id)).length > 0, 'the log is kept');
    assert.equal((await sys.call<{ latestVersion: number | null }>('GET', `/v1/templates/${template}`)).body.latestVersion, null);
  });

  it('cancels a running build: it ends cancelled and makes no version', async () => {
    const template = await newTemplate();
    const big = Array.from({ length: 40 }, (_, i) => [`blob-${i}.txt`, `${i}`.repeat(2_000_000)] as const);
    const sourceId = await upload(await tgzOf({ ...files('big'), ...Object.fromEntries(big) }), 'application/gzip');
    const started = await sys.call<Build>('POST', `/v1/templates/${template}/builds`, { type: { name: type, version: 1 }, source: { kind: 'upload', sourceId }, parameters: plan });
    assert.equal(started.status, 202);
    await eventually('the build to run', async () => ((await sys.call<Build>('GET', `/v1/builds/${started.body.id}`)).body.status === 'running' ? true : undefined));
    const cancel = await sys.call('POST', `/v1/builds/${started.body.id}/cancel`);
    assert.equal(cancel.status, 202);
    const ended = await eventually('the build to end', async () => {
      const b = await sys.call<Build>('GET', `/v1/builds/${started.body.id}`);
      return ['succeeded', 'failed', 'cancelled'].includes(b.body.status) ? b.body : undefined;
    }, 60_000);
    assert.equal(ended.status, 'cancelled', ended.message ?? '');
    assert.equal((await sys.call('POST', `/v1/builds/${started.body.id}/cancel`)).status, 409, 'an ended build cannot be cancelled');
  });

  it('freezes a type version once a template version uses it', async () => {
    const fresh = await newType(baseImage);
    const put = await sys.call('PUT', `/v1/template-types/${fresh}/versions/1`, { image: baseImage, parameters: TYPE_PARAMETERS, outputs: [{ name: 'label' }, { name: 'more' }] });
    assert.equal(put.status, 200, 'unused: it may change');
    const template = await newTemplate();
    const b = await build(template, { type: { name: fresh, version: 1 }, source: { kind: 'upload', sourceId: await upload(await tgzOf(files('frozen')), 'application/gzip') }, parameters: plan });
    assert.equal(b.status, 'succeeded', b.message ?? '');
    const again = await sys.call<{ code: string }>('PUT', `/v1/template-types/${fresh}/versions/1`, { image: baseImage, parameters: [] });
    assert.equal(again.status, 409);
    assert.equal(again.body.code, 'TEMPLATE_TYPE_VERSION_IN_USE');
  });

  it('refuses hostile uploads with a clear reason and stores nothing', async () => {
    const count = async () => Number((await sys.db.query<{ n: string }>('SELECT count(*) n FROM template_sources')).rows[0]!.n);
    const before_ = await count();
    const hostile: [string, Buffer, string][] = [
      ['a ../ path', await tgzOf({ '../escape.sh': 'x' }), 'application/gzip'],
      ['an absolute path', await tgzOf({ '/etc/cron.d/x': 'x' }), 'application/gzip'],
      ['garbage', Buffer.from('this is not an archive'), 'application/gzip'],
      ['an empty archive', await tgzOf({}), 'application/gzip'],
      ['a zip of a ../ path', await zipOf({ '../../x': 'x' }), 'application/zip'],
    ];
    for (const [what, archive, type_] of hostile) {
      const res = await raw('POST', '/v1/template-sources', archive, type_);
      const body = (await res.json()) as { code: string; details?: { reason?: string } };
      assert.equal(res.status, 422, `${what}: ${JSON.stringify(body)}`);
      assert.equal(body.code, 'SOURCE_REJECTED', what);
      assert.ok(body.details?.reason, `${what}: a machine-readable reason`);
    }
    assert.equal((await raw('POST', '/v1/template-sources', Buffer.from('{}'), 'application/json')).status, 415);
    assert.equal((await raw('POST', '/v1/template-sources', await tgzOf(files('x')), 'application/gzip', sys.tokens.viewer)).status, 403);
    assert.equal(await count(), before_, 'nothing stored');
  });

  it('warns, after a successful deploy, of each output the type declares that the template did not write', async () => {
    const type = await newType(baseImage, { adhoc: true, outputs: [{ name: 'label' }, { name: 'endpoint', description: 'where it answers' }] });
    const template = await newTemplate();
    const sourceId = await upload(await tgzOf(files('outputs')), 'application/gzip');
    const v = await sys.call('POST', `/v1/templates/${template}/adhoc-versions`, { type: { name: type, version: 1 }, source: { kind: 'upload', sourceId }, parameters: plan });
    assert.equal(v.status, 201, JSON.stringify(v.body));
    const d = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name: template }, parameters: { greeting: 'hi' }, target: { kind: 'node', node: sys.nodeId } });
    const deployed = await runOnce(d.body.id);
    assert.equal(deployed.status, 'succeeded', 'a missing output is worth a warning, not a failure');
    assert.deepEqual(deployed.warnings, ['the template type declares the output endpoint, which the template did not write to /state/outputs.json']);
    assert.deepEqual((await runOnce(d.body.id, 'destroy')).warnings, [], 'only a deploy is expected to write them');
  });

  it('runs an ad-hoc template: its files mounted at /template in the type\'s generic image, without a build', async () => {
    const adhocType = await newType(baseImage, { adhoc: true });
    const template = await newTemplate();
    const sourceId = await upload(await tgzOf(files('adhoc')), 'application/gzip');
    const refused = await sys.call('POST', `/v1/templates/${template}/builds`, { type: { name: adhocType, version: 1 }, source: { kind: 'upload', sourceId } });
    assert.equal(refused.status, 400, 'ad-hoc types are not built');
    const v = await sys.call<{ version: number; image: string; origin: { adhoc: boolean } }>('POST', `/v1/templates/${template}/adhoc-versions`, {
      type: { name: adhocType, version: 1 },
      source: { kind: 'upload', sourceId },
      parameters: plan,
    });
    assert.equal(v.status, 201, JSON.stringify(v.body));
    assert.equal(v.body.image, baseImage);
    assert.equal(v.body.origin.adhoc, true);
    for (const target of [{ kind: 'node', node: sys.nodeId }, { kind: 'cluster' }]) {
      const d = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name: template }, parameters: { greeting: 'hi' }, target });
      const run = await runOnce(d.body.id);
      assert.equal(run.status, 'succeeded', `${target.kind}: ${run.message}`);
      assert.deepEqual(run.outputs, { label: 'adhoc', message: 'hello from adhoc', params: { greeting: 'hi', region: 'us', size: 1 } });
    }
  });
});

describe('template builds whose registry refuses the push', { skip: noCluster }, () => {
  let sys: TestSystem;
  before(async () => {
    // Nothing listens there: the push cannot happen.
    sys = await startTestSystem({ builder: true, nodeWorker: false, env: { GLIDERGUN_REGISTRY: `127.0.0.1:${await freePort()}/glider-gun/templates` } });
  });
  after(async () => {
    await sys.stop();
  });

  it('fails the build with reason push-failed and a clear message, making no version', async () => {
    const base = await pushImageTo(env('GG_TEST_REGISTRY'), images.shellType);
    const typeName = uniqueName('shell');
    await sys.call('POST', '/v1/template-types', { name: typeName });
    await sys.call('POST', `/v1/template-types/${typeName}/versions`, { image: base, parameters: TYPE_PARAMETERS });
    const template = uniqueName('built');
    await sys.call('POST', '/v1/templates', { name: template });
    const up = await fetch(`${sys.api.url}/v1/template-sources`, {
      method: 'POST',
      body: await tgzOf({ 'main.sh': 'echo hi', 'message.txt': 'x' }),
      headers: { authorization: `Bearer ${sys.tokens.author}`, 'content-type': 'application/gzip' },
    });
    const source = (await up.json()) as { id: string };
    const started = await sys.call<Build>('POST', `/v1/templates/${template}/builds`, { type: { name: typeName, version: 1 }, source: { kind: 'upload', sourceId: source.id } });
    assert.equal(started.status, 202, JSON.stringify(started.body));
    const b = await eventually('the build to end', async () => {
      const got = await sys.call<Build>('GET', `/v1/builds/${started.body.id}`);
      return ['succeeded', 'failed', 'cancelled'].includes(got.body.status) ? got.body : undefined;
    }, 180_000);
    assert.equal(b.status, 'failed');
    assert.equal(b.reason, 'push-failed', b.message ?? '');
    assert.equal((await sys.call<{ latestVersion: number | null }>('GET', `/v1/templates/${template}`)).body.latestVersion, null);
  });
});

