import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import Docker from 'dockerode';
import tar, { type Header } from 'tar-stream';
import { generateDockerfile, templateLabels, type TemplateImageInput } from '../../activities/templates/dockerfile.js';
import { BuildFailedError, PushFailedError, buildAndPushImage, type BuildAbortedError, type PushedImage, type RegistryAuth } from '../../activities/templates/image-build.js';
import { manifestDigest } from '../../activities/templates/registry.js';
import { pushImageTo, startImageRegistry, type ImageRegistry } from '../../infra/dev/kubernetes.js';
import { freePort } from '../../infra/dev/ports.js';
import { RegistryCredentials } from '../../core/registry-credentials.js';
import { scriptImage } from '../support/images.js';
import { startGuardedRegistry } from '../support/registry.js';
import { env, eventually, images } from '../support/system.js';

type Entry = Partial<Header> & { name: string; body?: string | Buffer };

const MTIME = new Date('2024-05-06T07:08:09Z');

async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of stream) parts.push(p);
  return Buffer.concat(parts);
}

/** A source archive as intake makes it: tar + gzip, fixed times. Level 0 keeps 200 MB of noise quick. */
async function sourceArchive(entries: Entry[], level = 6): Promise<Buffer> {
  const pack = tar.pack();
  for (const { body, ...header } of entries) pack.entry({ mtime: MTIME, ...header }, body ?? '');
  pack.finalize();
  return gzipSync(await collect(pack as AsyncIterable<Buffer>), { level });
}

const TEMPLATE_FILES: Entry[] = [
  { name: './', type: 'directory', mode: 0o755 },
  { name: 'bin/', type: 'directory', mode: 0o755 },
  { name: 'bin/run.sh', mode: 0o755, body: '#!/bin/sh\necho "template says: $*"\n' },
  { name: 'lib/', type: 'directory', mode: 0o755 },
  { name: 'lib/conf/', type: 'directory', mode: 0o750 },
  { name: 'lib/conf/settings.json', mode: 0o640, body: '{"region":"eu"}\n' },
  { name: 'data/', type: 'directory', mode: 0o700 },
  { name: 'README.md', mode: 0o644, body: '# a template\n' },
  { name: 'run', type: 'symlink', linkname: 'bin/run.sh' },
];

/** What `stat` says about the template's files in an image: name, octal mode, type, owner, mtime. */
const STAT_TEMPLATE = 'cd /template && find . | sort | while read f; do stat -c "%n %a %F %u:%g %Y" "$f"; done';

describe('template image builds (real engine, real registry)', () => {
  const docker = new Docker(process.env.DOCKER_HOST ? undefined : { socketPath: '/var/run/docker.sock' });
  const scratch = path.join(env('GG_TEST_SCRATCH'), `image-build-${process.pid}`);
  const ownRegistries: ImageRegistry[] = [];
  /** Local names this file made or pulled, removed at the end. */
  const made: string[] = [];
  /** Images pulled back from the registry to look at: not leftovers of a build. */
  const pulled = new Set<string>();
  let registry: string;
  /** A template type: busybox with an ENTRYPOINT that runs the template's script (local only). */
  let typeImage: string;
  let typeImageId: string;
  /** This process's template type name: what its builds are labelled with. */
  const ownType = `script-${process.pid}-${randomBytes(3).toString('hex')}`;

  const startRegistry = async (readOnly = false) => {
    const r = await startImageRegistry({ dir: path.join(scratch, `registry-${ownRegistries.length}`), readOnly, say: () => undefined });
    ownRegistries.push(r);
    return r.address;
  };

  const input = (overrides: Partial<TemplateImageInput> = {}): TemplateImageInput => ({
    baseImage: typeImage,
    templateName: `t${randomBytes(3).toString('hex')}`,
    version: 1,
    sourceDigest: randomBytes(32).toString('hex'),
    typeName: ownType,
    typeVersion: 1,
    ...overrides,
  });

  const build = (
    image: TemplateImageInput,
    source: Buffer,
    tag: string,
    opts: { signal?: AbortSignal; timeoutMs?: number; onLog?: (l: string) => void; registryAuth?: RegistryAuth; pullCredentials?: RegistryCredentials } = {},
  ) => {
    const lines: string[] = [];
    const t0 = Date.now();
    const result = buildAndPushImage(docker, { dockerfile: generateDockerfile(image), source, tag, registryAuth: opts.registryAuth, pullCredentials: opts.pullCredentials }, {
      onLog: (l) => {
        lines.push(l);
        opts.onLog?.(l);
      },
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    });
    return { result, lines, elapsed: () => Date.now() - t0 };
  };

  /** Images made from the type image by builds (the type image itself excluded), and containers of them. */
  const leftovers = async (baseId = typeImageId) => {
    const all = await docker.listImages({ all: true });
    const ours = new Set([baseId]);
    for (let grew = true; grew; ) {
      grew = false;
      for (const i of all) {
        if (!ours.has(i.Id) && ours.has(i.ParentId)) {
          ours.add(i.Id);
          grew = true;
        }
      }
    }
    ours.delete(baseId);
    // Whatever carries this file's template type label was made by a build of it, orphaned or not.
    for (const i of all) if (i.Labels?.['io.glider-gun.template-type'] === `${ownType}@1` && i.Id !== baseId) ours.add(i.Id);
    for (const id of pulled) ours.delete(id);
    const containers = await docker.listContainers({ all: true, filters: { ancestor: [baseId] } });
    return { images: [...ours], containers: containers.map((c) => `${c.Id.slice(0, 12)} ${c.Command} ${c.State}`) };
  };
  /**
   * Clean, and still clean `stableMs` later: after a cancel the engine may commit a step late, and an
   * engine that stopped before the last step is only known to have stopped after a while (build-leftovers.ts).
   */
  const assertClean = async (what: string, baseId = typeImageId, stableMs = 0, timeoutMs = 30_000) => {
    let cleanSince: number | undefined;
    const left = await eventually(`${what}: the engine to be clean`, async () => {
      const l = await leftovers(baseId);
      if (l.images.length + l.containers.length > 0) return (cleanSince = undefined);
      cleanSince ??= Date.now();
      return Date.now() - cleanSince >= stableMs ? l : undefined;
    }, timeoutMs).catch(async () => leftovers(baseId));
    assert.deepEqual(left, { images: [], containers: [] }, what);
  };
  const absent = async (ref: string) => assert.equal(await docker.getImage(ref).inspect().then(() => 'present', (e: { statusCode?: number }) => e.statusCode), 404, `${ref} is gone`);

  /** Runs an image to its end; its output (a TTY: no stream framing). */
  const run = async (image: string, opts: { cmd?: string[]; entrypoint?: string[] } = {}) => {
    const container = await docker.createContainer({
      Image: image,
      Tty: true,
      NetworkDisabled: true,
      ...(opts.cmd ? { Cmd: opts.cmd } : {}),
      ...(opts.entrypoint ? { Entrypoint: opts.entrypoint } : {}),
    });
    try {
      await container.start();
      const { StatusCode } = (await container.wait()) as { StatusCode: number };
      const out = (await container.logs({ stdout: true, stderr: true })).toString().replace(/\r/g, '');
      assert.equal(StatusCode, 0, out);
      return out;
    } finally {
      await container.remove({ force: true });
    }
  };
  const pull = async (ref: string) => {
    made.push(ref);
    await new Promise<void>((resolve, reject) =>
      docker.pull(ref, {}, (err: Error | null, stream) => {
        if (err) return reject(err);
        docker.modem.followProgress(stream!, (e: Error | null) => (e ? reject(e) : resolve()));
      }),
    );
    pulled.add((await docker.getImage(ref).inspect()).Id);
  };

  before(async () => {
    registry = process.env.GG_TEST_REGISTRY ?? (await startRegistry());
    // A type image of this process's own: the leftover checks count what was built from it, and another
    // test process (a mutant, another run of this file) builds from its own.
    typeImage = await scriptImage(docker, `#!/bin/sh\n# a template type for image-build tests (${ownType})\nexec /template/bin/run.sh "$@"\n`);
    made.push(typeImage);
    typeImageId = (await docker.getImage(typeImage).inspect()).Id;
  });

  after(async () => {
    for (const ref of made.reverse()) await docker.getImage(ref).remove().catch(() => undefined);
    for (const r of ownRegistries) await r.stop();
  });

  it('builds a template FROM a base pulled by digest, pushes it, and the image runs the template', async () => {
    // The type image in the registry, pinned by digest, and not on the engine under that name: it is pulled.
    const pushed = await pushImageTo(registry, typeImage);
    const [repo, tag] = [pushed.slice(0, pushed.lastIndexOf(':')), pushed.slice(pushed.lastIndexOf(':') + 1)];
    const baseDigest = await manifestDigest({ registry, repository: repo.slice(registry.length + 1), tag }, { signal: AbortSignal.timeout(10_000) });
    const base = `${repo}@${baseDigest}`;
    made.push(base);
    await docker.getImage(base).remove().catch(() => undefined);

    const image = input({ baseImage: base });
    const name = `${registry}/glider-gun/templates/${image.templateName}`;
    const b = build(image, await sourceArchive(TEMPLATE_FILES), `${name}:1`);
    const result: PushedImage = await b.result;
    console.log(`build + push: ${b.elapsed()} ms`);

    assert.match(result.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(result.reference, `${name}@${result.digest}`);
    assert.match(result.imageId, /^sha256:[0-9a-f]{64}$/);
    // The registry serves that manifest under the tag, asked independently.
    const served = await fetch(`http://${registry}/v2/glider-gun/templates/${image.templateName}/manifests/1`, {
      method: 'HEAD',
      headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' },
    });
    assert.equal(served.headers.get('docker-content-digest'), result.digest);
    // The log, live: the pull, every step, the build's end (the cancel tests rely on that line), the push.
    for (const expected of [`pulling base image ${base}`, 'Step 1/3 : FROM', 'Step 3/3 : COPY --chown=0:0 template/ /template/', 'Successfully built ', `pushing ${name}:1`, `pushed ${result.reference}`]) {
      assert.ok(b.lines.some((l) => l.startsWith(expected)), `log has '${expected}':\n${b.lines.join('\n')}`);
    }
    assert.ok(!b.lines.some((l) => l.includes('Pushing [')), 'no progress ticks in the log');

    // The engine is as it was, but for the pulled base.
    await absent(`${name}:1`);
    await absent(result.imageId);
    await docker.getImage(base).inspect();
    await assertClean('after a build');

    // The pushed image: labels, the base's ENTRYPOINT, /template with modes, links and the source's times.
    await pull(result.reference);
    const info = await docker.getImage(result.reference).inspect();
    for (const [k, v] of Object.entries(templateLabels(image))) assert.equal(info.Config.Labels[k], v, k);
    assert.equal(info.Config.Labels['org.opencontainers.image.base.digest'], baseDigest);
    assert.deepEqual(info.Config.Entrypoint, ['/entrypoint.sh']);
    assert.equal(await run(result.reference, { cmd: ['hello', 'world'] }), 'template says: hello world\n');
    const listing = await run(result.reference, { entrypoint: ['/bin/sh', '-c', STAT_TEMPLATE] });
    const t = String(MTIME.getTime() / 1000);
    assert.deepEqual(listing.trim().split('\n').slice(1), [
      `./README.md 644 regular file 0:0 ${t}`,
      `./bin 755 directory 0:0 ${t}`,
      `./bin/run.sh 755 regular file 0:0 ${t}`,
      `./data 700 directory 0:0 ${t}`,
      `./lib 755 directory 0:0 ${t}`,
      `./lib/conf 750 directory 0:0 ${t}`,
      `./lib/conf/settings.json 640 regular file 0:0 ${t}`,
      `./run 777 symbolic link 0:0 ${t}`,
    ]);
    assert.equal(await run(result.reference, { entrypoint: ['/template/run'], cmd: ['via', 'link'] }), 'template says: via link\n');
  });

  it('writes label values exactly, whatever they contain', async () => {
    const image = input({ templateName: 'a "quoted" $HOME name \\ with ${x:-y} and ünïcødé', typeName: "type's \\" });
    const name = `${registry}/glider-gun/templates/labels-${randomBytes(3).toString('hex')}`;
    const result = await build(image, await sourceArchive(TEMPLATE_FILES), `${name}:1`).result;
    await pull(result.reference);
    const labels = (await docker.getImage(result.reference).inspect()).Config.Labels;
    assert.equal(labels['io.glider-gun.template'], image.templateName);
    assert.equal(labels['io.glider-gun.template-type'], `${image.typeName}@1`);
  });

  it('fails with BuildFailedError when the base image does not exist, the error in the log, nothing left', async () => {
    const base = `${registry}/glider-gun/no-such-type:${randomBytes(3).toString('hex')}`;
    const tag = `${registry}/glider-gun/templates/orphan:1`;
    const b = build(input({ baseImage: base }), await sourceArchive(TEMPLATE_FILES), tag);
    await assert.rejects(b.result, (err: BuildFailedError) => {
      assert.ok(err instanceof BuildFailedError);
      assert.equal(err.code, 'BUILD_FAILED');
      assert.match(err.message, new RegExp(`${base.replace(/[.]/g, '\\.')}.*(not found|unknown)`));
      return true;
    });
    assert.ok(b.lines.some((l) => l.startsWith('error: ') && /not found|unknown/.test(l)), b.lines.join('\n'));
    await absent(tag);
    await absent(base);
  });

  it('fails with BuildFailedError when a step fails (COPY onto a file), removing the images the build made', async () => {
    // A base whose /template is a file: COPY into it fails, after the LABEL step committed an image.
    const pack = tar.pack();
    // Of this process's own (its label), as the type image is: what is built from it is this test's alone.
    pack.entry({ name: 'Dockerfile' }, `FROM ${images.busybox}\nCOPY template /template\nLABEL gg.test=image-build-file-template-${ownType}\n`);
    pack.entry({ name: 'template' }, 'a file');
    pack.finalize();
    const bad = `glider-gun/test-template-is-a-file:${ownType}`;
    const stream = await docker.buildImage(Readable.from(pack as AsyncIterable<Buffer>), { t: bad, rm: true, forcerm: true });
    await new Promise((resolve, reject) => docker.modem.followProgress(stream, (e: Error | null) => (e ? reject(e) : resolve(undefined))));
    made.push(bad);
    const badId = (await docker.getImage(bad).inspect()).Id;

    const tag = `${registry}/glider-gun/templates/copy-fails:1`;
    const b = build(input({ baseImage: bad }), await sourceArchive(TEMPLATE_FILES), tag);
    await assert.rejects(b.result, (err: BuildFailedError) => {
      assert.ok(err instanceof BuildFailedError, String(err));
      assert.match(err.message, /template/);
      return true;
    });
    assert.ok(b.lines.some((l) => l.startsWith('error: ')), b.lines.join('\n'));
    assert.ok(b.lines.some((l) => l.startsWith('Step 2/3 : LABEL')) && b.lines.some((l) => /^ ---> [0-9a-f]{12}$/.test(l)), 'the LABEL step made an image');
    await absent(tag);
    await assertClean('after a failed step', badId);
  });

  it('fails with PushFailedError when nothing listens where the registry should be', async () => {
    const tag = `127.0.0.1:${await freePort()}/glider-gun/templates/nowhere:1`;
    const b = build(input(), await sourceArchive(TEMPLATE_FILES), tag);
    await assert.rejects(b.result, (err: PushFailedError) => {
      assert.ok(err instanceof PushFailedError, String(err));
      assert.equal(err.code, 'PUSH_FAILED');
      assert.match(err.message, /connection refused/);
      return true;
    });
    assert.ok(b.lines.some((l) => l.startsWith('error: ') && l.includes('connection refused')), b.lines.join('\n'));
    await absent(tag);
    await assertClean('after a refused push');
  });

  it('fails with PushFailedError when the registry is read-only', async () => {
    const readOnly = await startRegistry(true);
    const tag = `${readOnly}/glider-gun/templates/read-only:1`;
    const b = build(input(), await sourceArchive(TEMPLATE_FILES), tag);
    await assert.rejects(b.result, (err: PushFailedError) => {
      assert.ok(err instanceof PushFailedError, String(err));
      console.log(`read-only registry: ${err.message}`);
      assert.match(err.message, /405.*read-only\?/is);
      return true;
    });
    await absent(tag);
    await assertClean('after a push to a read-only registry');
  });

  describe('a registry that wants credentials (Basic, in front of the registry)', () => {
    const auth = { username: 'builder', password: 's3cret' };
    let guard: Awaited<ReturnType<typeof startGuardedRegistry>>;
    let guarded: string;

    before(async () => {
      guard = await startGuardedRegistry(registry, auth);
      guarded = guard.address;
    });
    after(() => guard.stop());

    it('fails with PushFailedError without credentials, or with wrong ones', async () => {
      for (const registryAuth of [undefined, { ...auth, password: 'wrong', serveraddress: guarded }]) {
        const tag = `${guarded}/glider-gun/templates/guarded:1`;
        const t0 = Date.now();
        const result = buildAndPushImage(docker, { dockerfile: generateDockerfile(input()), source: await sourceArchive(TEMPLATE_FILES), tag, registryAuth }, { onLog: () => undefined });
        await assert.rejects(result, (err: PushFailedError) => {
          assert.ok(err instanceof PushFailedError, String(err));
          console.log(`${registryAuth ? 'wrong' : 'no'} credentials, ${Date.now() - t0} ms: ${err.message}`);
          // None: the engine's push fails at once. Wrong ones: found before the build (the engine would retry
          // the refused uploads for most of a minute).
          assert.match(err.message, registryAuth ? /refuses the credentials of builder: 401/ : /no basic auth credentials \(the registry wants other credentials\)/);
          assert.ok(Date.now() - t0 < 5_000);
          return true;
        });
        await absent(tag);
      }
      await assertClean('after unauthorized pushes');
    });

    it('pulls a base from a registry other than the push target with the pull credentials, and says why without them', async () => {
      const pushed = await pushImageTo(registry, typeImage);
      const [repo, tag] = [pushed.slice(registry.length + 1, pushed.lastIndexOf(':')), pushed.slice(pushed.lastIndexOf(':') + 1)];
      // A door of its own, so the engine has never pulled the base under this name.
      const other = await startGuardedRegistry(registry, auth);
      try {
        const base = `${other.address}/${repo}@${await manifestDigest({ registry, repository: repo, tag }, { signal: AbortSignal.timeout(10_000) })}`;
        made.push(base);
        const image = input({ baseImage: base });
        const target = `${registry}/glider-gun/templates/${image.templateName}:1`;
        const without = build(image, await sourceArchive(TEMPLATE_FILES), target);
        await assert.rejects(without.result, (err: BuildFailedError) => {
          assert.ok(err instanceof BuildFailedError, String(err));
          assert.match(err.message, /the base image .* could not be pulled: .*(no basic auth credentials|unauthorized)/i);
          return true;
        });
        const withCredentials = build(image, await sourceArchive(TEMPLATE_FILES), target, {
          pullCredentials: new RegistryCredentials([{ ...auth, serveraddress: other.address }]),
        });
        const result = await withCredentials.result;
        assert.equal(result.reference, `${registry}/glider-gun/templates/${image.templateName}@${result.digest}`);
      } finally {
        await other.stop();
      }
      await assertClean('after a build with a base from a guarded registry');
    });

    it('pulls the base and pushes the template with them, and reads the digest back with them', async () => {
      const pushed = await pushImageTo(registry, typeImage);
      const [repo, tag] = [pushed.slice(registry.length + 1, pushed.lastIndexOf(':')), pushed.slice(pushed.lastIndexOf(':') + 1)];
      const baseDigest = await manifestDigest({ registry, repository: repo, tag }, { signal: AbortSignal.timeout(10_000) });
      const base = `${guarded}/${repo}@${baseDigest}`;
      made.push(base);
      const image = input({ baseImage: base });
      const b = build(image, await sourceArchive(TEMPLATE_FILES), `${guarded}/glider-gun/templates/${image.templateName}:1`, { registryAuth: { ...auth, serveraddress: guarded } });
      const result = await b.result;
      assert.ok(b.lines.includes(`pulling base image ${base}`), b.lines.join('\n'));
      assert.equal(result.reference, `${guarded}/glider-gun/templates/${image.templateName}@${result.digest}`);
      // The same image in the registry behind, asked without credentials.
      assert.equal(await manifestDigest({ registry, repository: `glider-gun/templates/${image.templateName}`, tag: '1' }, { signal: AbortSignal.timeout(10_000) }), result.digest);
      await assertClean('after an authenticated build');
    });
  });

  it('refuses a tag that is not an image reference before building anything', async () => {
    const b = build(input(), await sourceArchive(TEMPLATE_FILES), `${registry}/Glider-Gun/UPPER:1`);
    await assert.rejects(b.result, PushFailedError);
    assert.deepEqual(b.lines, []);
  });

  describe('cancel and timeout, with 200 MB of content', () => {
    /** The classic builder's last line of a build that ran to its end. */
    const BUILD_END = (line: string) => line.startsWith('Successfully built ');
    let big: Buffer;
    before(async () => {
      const noise = Array.from({ length: 4 }, (_, i) => ({ name: `blob-${i}`, mode: 0o644, body: randomBytes(50 * 1024 * 1024) }));
      big = await sourceArchive([...TEMPLATE_FILES, ...noise], 0);
    });

    /** Cancels when a log line matches; answers how long the rejection took and what the log showed. */
    const cancelAt = async (when: RegExp, tag: string) => {
      const abort = new AbortController();
      let abortedAt = 0;
      const b = build(input(), big, tag, {
        signal: abort.signal,
        onLog: (l) => {
          if (!abortedAt && when.test(l)) {
            abortedAt = Date.now();
            abort.abort();
          }
        },
      });
      await assert.rejects(b.result, (err: BuildAbortedError) => {
        assert.equal(err.code, 'BUILD_CANCELLED');
        assert.equal(err.name, 'AbortError');
        return true;
      });
      const reaction = Date.now() - abortedAt;
      console.log(`cancel at ${when}: rejected ${reaction} ms after the abort, ${b.elapsed()} ms after the start; log: ${JSON.stringify(b.lines.map((l) => l.slice(0, 60)))}`);
      assert.ok(abortedAt > 0, 'the cancel was sent');
      // "At once" as an ordering, not a time (a loaded machine slows both sides): the engine's stream is cut at
      // the cancel, so the build never gets to report its end. A cancel that waited for the build would.
      assert.ok(!b.lines.some(BUILD_END), `rejected ${reaction} ms after the abort, but only after the build ended: ${JSON.stringify(b.lines)}`);
      return b;
    };

    it('cancels at the first log line (the LABEL step running): BUILD_CANCELLED at once, nothing left', async () => {
      const tag = `${registry}/glider-gun/templates/cancelled-early:1`;
      await cancelAt(/./, tag);
      const t0 = Date.now();
      await assertClean('after a cancel in the LABEL step', typeImageId, 3_000, 60_000);
      console.log(`cancel in LABEL: the engine clean ${Date.now() - t0 - 3_000} ms after the cancel`);
      await absent(tag);
    });

    it('cancels during the COPY: BUILD_CANCELLED at once; the image the engine commits after is removed, untagged', async () => {
      const tag = `${registry}/glider-gun/templates/cancelled-in-copy:1`;
      await cancelAt(/^Step 3\/3 : COPY/, tag);
      const t0 = Date.now();
      await assertClean('after a cancel in the COPY step', typeImageId, 3_000);
      console.log(`cancel in COPY: the engine clean ${Date.now() - t0 - 3_000} ms after the cancel`);
      await absent(tag);
    });

    it('times out while the context is being sent: BUILD_TIMEOUT, nothing left', async () => {
      const tag = `${registry}/glider-gun/templates/timed-out:1`;
      const b = build(input(), big, tag, { timeoutMs: 200 });
      await assert.rejects(b.result, (err: BuildAbortedError) => {
        assert.equal(err.code, 'BUILD_TIMEOUT');
        return true;
      });
      console.log(`timeout: rejected after ${b.elapsed()} ms; log: ${JSON.stringify(b.lines)}`);
      // Rejected before the build could end (an ordering, whatever the machine's load): sending 200 MB and
      // copying it take far longer than the 200 ms timeout; a timeout that waited for the engine would see the end.
      assert.ok(!b.lines.some(BUILD_END), `rejected after ${b.elapsed()} ms, but only after the build ended: ${JSON.stringify(b.lines)}`);
      await assertClean('after a timeout');
      await absent(tag);
    });
  });

  it('builds the same input twice into the same files, but not the same digest (the classic builder stamps times)', async () => {
    const image = input();
    const source = await sourceArchive(TEMPLATE_FILES);
    const name = `${registry}/glider-gun/templates/${image.templateName}`;
    const first = await build(image, source, `${name}:1`).result;
    await new Promise((r) => setTimeout(r, 1_100)); // a second later: the image's times differ
    const second = await build(image, source, `${name}:1`).result;
    console.log(`same input: ${first.digest} then ${second.digest}`);
    await pull(first.reference);
    await pull(second.reference);
    const [a, b] = [await docker.getImage(first.reference).inspect(), await docker.getImage(second.reference).inspect()];
    // The same labels, base layers and file tree (modes, owners, times of everything under /template)...
    assert.deepEqual(a.Config.Labels, b.Config.Labels);
    assert.deepEqual(a.RootFS.Layers!.slice(0, -1), b.RootFS.Layers!.slice(0, -1));
    const tree = (ref: string) => run(ref, { entrypoint: ['/bin/sh', '-c', STAT_TEMPLATE] }).then((out) => out.split('\n').slice(1));
    assert.deepEqual(await tree(first.reference), await tree(second.reference));
    // ...but the classic builder writes the build's time into the image config (`created`, and each history
    // entry's) and gives /template itself the time of the COPY: another config, another layer, another digest.
    assert.notEqual(first.digest, second.digest);
    assert.notEqual(a.Created, b.Created);
    const folderTime = (ref: string) => run(ref, { entrypoint: ['/bin/stat', '-c', '%Y', '/template'] });
    console.log(`/template mtime: ${(await folderTime(first.reference)).trim()} vs ${(await folderTime(second.reference)).trim()}; COPY layers ${a.RootFS.Layers!.at(-1)} vs ${b.RootFS.Layers!.at(-1)}`);
  });
});
