import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access, mkdir, readFile, readdir, rename } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type Docker from 'dockerode';
import tar from 'tar-stream';
import { cacheDir } from './cache.js';
import { say as defaultSay, step, type Say } from './progress.js';

const IMAGES_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'images');
/** The Go module of the pod-runner, the static binary a Kubernetes run's template container runs under. */
export const POD_RUNNER_DIR = path.join(IMAGES_DIR, 'pod-runner');
/** Debian's busybox-static: a self-contained userland for base images, since no image registry can be reached. */
export const BUSYBOX_PATH = process.env.GLIDERGUN_BUSYBOX ?? '/bin/busybox';

export interface BaseImages {
  busybox: string;
  example: string;
  /** The base image of the "shell" template type: runs /template/main.sh. */
  shellType: string;
}

const hash = (...parts: (string | Buffer)[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex').slice(0, 12);
};

async function imageExists(docker: Docker, ref: string): Promise<boolean> {
  return docker
    .getImage(ref)
    .inspect()
    .then(
      () => true,
      () => false,
    );
}

async function drain(docker: Docker, stream: NodeJS.ReadableStream): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null, results: { error?: string }[]) => {
      const failed = results?.find((r) => r.error);
      if (err || failed) reject(err ?? new Error(failed?.error));
      else resolve();
    });
  });
}

/** A root filesystem of one static busybox and a link per applet, imported as an image. */
async function buildBusybox(docker: Docker, ref: string, binary: Buffer, applets: string[]): Promise<void> {
  const pack = tar.pack();
  const dirs = new Set(['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'tmp', 'etc', 'root', 'state', 'logs']);
  for (const dir of dirs) pack.entry({ name: `${dir}/`, type: 'directory', mode: dir === 'tmp' ? 0o1777 : 0o755 });
  pack.entry({ name: 'bin/busybox', mode: 0o755 }, binary);
  for (const applet of applets) {
    if (applet === 'bin/busybox') continue;
    const depth = applet.split('/').length - 1;
    pack.entry({ name: applet, type: 'symlink', linkname: `${'../'.repeat(depth)}bin/busybox` });
  }
  pack.entry({ name: 'etc/passwd', mode: 0o644 }, 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
  pack.entry({ name: 'etc/group', mode: 0o644 }, 'root:x:0:\nnogroup:x:65534:\n');
  pack.finalize();
  const [repo, tag] = ref.split(':') as [string, string];
  const stream = await docker.importImage(Readable.from(pack), { repo, tag, changes: ['CMD ["/bin/sh"]', 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin'] } as object);
  await drain(docker, stream);
}

async function listApplets(): Promise<string[]> {
  const { stdout } = await promisify(execFile)(BUSYBOX_PATH, ['--list-full']);
  return stdout.split('\n').filter(Boolean);
}

async function buildFromDir(docker: Docker, dir: string, ref: string, buildargs: Record<string, string>): Promise<void> {
  const files = await readdir(dir);
  const stream = await docker.buildImage({ context: dir, src: files }, { t: ref, buildargs, rm: true, forcerm: true });
  await drain(docker, stream);
}

/**
 * The images the dev stack and the tests use, made locally and tagged by a hash of their inputs,
 * so a change rebuilds them and an unchanged input costs one image lookup.
 */
export async function ensureBaseImages(docker: Docker, out: Say = defaultSay): Promise<BaseImages> {
  let binary: Buffer;
  try {
    binary = await readFile(BUSYBOX_PATH);
  } catch {
    throw new Error(`${BUSYBOX_PATH} is missing: install Debian's busybox-static (apt-get install -y busybox-static)`);
  }
  const busybox = `glider-gun/busybox:${hash(binary)}`;
  if (!(await imageExists(docker, busybox))) {
    await step(`making base image ${busybox}`, async () => buildBusybox(docker, busybox, binary, await listApplets()), out);
  }
  const onBusybox = async (name: string): Promise<string> => {
    const dir = path.join(IMAGES_DIR, name);
    const files = (await readdir(dir)).sort();
    const contents = await Promise.all(files.map((f) => readFile(path.join(dir, f))));
    const ref = `glider-gun/${name}:${hash(busybox, ...files, ...contents)}`;
    if (!(await imageExists(docker, ref))) {
      await step(`building image ${ref}`, () => buildFromDir(docker, dir, ref, { BASE_IMAGE: busybox }), out);
    }
    // Stable names for people following the docs; the tests use the hashed ones.
    await docker.getImage(ref).tag({ repo: `glider-gun/${name}`, tag: 'latest' });
    return ref;
  };
  const example = await onBusybox('example-template');
  const shellType = await onBusybox('shell-type');
  await docker.getImage(busybox).tag({ repo: 'glider-gun/busybox', tag: 'latest' });
  return { busybox, example, shellType };
}

/** The environment for `go`: found on PATH or where infra/dev/provision-host.sh installs it; no toolchain download. */
export function goEnv(): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/local/go/bin`, GOTOOLCHAIN: 'local', CGO_ENABLED: '0' };
}

/**
 * The pod-runner as an image of one file, `/pod-runner` (FROM scratch), tagged by a hash of its Go sources.
 * The static binary is built once per hash into the cache, so an unchanged runner costs one image lookup.
 */
export async function ensurePodRunnerImage(docker: Docker, out: Say = defaultSay): Promise<string> {
  const files = (await readdir(POD_RUNNER_DIR)).filter((f) => f === 'go.mod' || (f.endsWith('.go') && !f.endsWith('_test.go'))).sort();
  const contents = await Promise.all(files.map((f) => readFile(path.join(POD_RUNNER_DIR, f))));
  const version = hash(...files.flatMap((f, i) => [f, '\0', contents[i]!, '\0']));
  const ref = `glider-gun/pod-runner:${version}`;
  if (await imageExists(docker, ref)) return ref;
  const binary = path.join(cacheDir('pod-runner', version), 'pod-runner');
  if (!(await access(binary).then(() => true, () => false))) {
    await step(`building the pod-runner (go build, ${version})`, async () => {
      await mkdir(path.dirname(binary), { recursive: true });
      const partial = `${binary}.${process.pid}.tmp`;
      await promisify(execFile)('go', ['build', '-trimpath', '-ldflags=-s -w', '-o', partial, '.'], { cwd: POD_RUNNER_DIR, env: goEnv() }).catch(
        (err: Error & { stderr?: string }) => {
          throw new Error(`go build of ${POD_RUNNER_DIR} failed (is Go installed?): ${err.stderr?.trim() || err.message}`);
        },
      );
      await rename(partial, binary);
    }, out);
  }
  await step(`making image ${ref}`, async () => {
    const pack = tar.pack();
    pack.entry({ name: 'pod-runner', mode: 0o755 }, await readFile(binary));
    pack.finalize();
    const [repo, tag] = ref.split(':') as [string, string];
    await drain(docker, await docker.importImage(Readable.from(pack), { repo, tag, changes: ['ENTRYPOINT ["/pod-runner"]'] } as object));
  }, out);
  return ref;
}
