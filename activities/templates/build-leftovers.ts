/**
 * What a classic build leaves on the engine when it does not end in a pushed image, and its removal.
 *
 * The classic builder commits an image per step and keeps them when a build fails (as its cache). On a
 * cancel it goes on for a while: the engine notices that the client has gone only between steps, so it
 * finishes the step in progress (a COPY of a large context takes seconds), commits its image, and tags it
 * if that was the last step; and the output it wrote before noticing never reached us. The build's images
 * are found by what the output did show, by their labels (the Dockerfile's LABEL comes before the COPY,
 * so every image the build commits has them), and as children of those.
 */
import type Docker from 'dockerode';
import { statusCode } from '../execution/docker-images.js';


/** Gone already (404): fine. */
function ignoreGone(err: unknown): void {
  if (statusCode(err) !== 404) throw err;
}

/**
 * What a classic build's output says it made: the image committed after each step (the " ---> <id>"
 * after a step other than FROM) and its intermediate containers ("Running in <id>"; kept after the
 * engine says "Removing intermediate container", as it may not have managed).
 */
export class BuildTrace {
  readonly images: string[] = [];
  readonly containers = new Set<string>();
  private instruction = '';

  line(text: string): void {
    let m: RegExpExecArray | null;
    if ((m = /^Step \d+\/\d+ : (\w+)/.exec(text))) this.instruction = m[1]!.toUpperCase();
    else if ((m = /^ ---> Running in ([0-9a-f]{12,64})$/.exec(text))) this.containers.add(m[1]!);
    else if ((m = /^ ---> ([0-9a-f]{12,64})$/.exec(text)) && this.instruction !== 'FROM') this.images.push(m[1]!);
  }
}

export interface BuildIdentity {
  /** The labels the Dockerfile sets: every image the build commits carries them. */
  labels: Record<string, string>;
  /** The build's tag: the only name an image of this build may have. */
  tag: string;
  /** When the build started (ms): its images are not older. */
  startedAt: number;
  /** The base images: never removed, whatever they look like. */
  bases: ReadonlySet<string>;
  /** How many images the whole build commits (dockerfile.ts's committedSteps). */
  steps: number;
}

const UNTAGGED = '<none>:<none>';

/**
 * The images of this build on the engine, each before its parent, and the length of their longest chain
 * (the number of steps committed). The roots are the images its output showed and, when `labelledUntil`
 * is given, those with its labels made between its start and then: a later build of the same template
 * from the same source has the same labels, and the window keeps its images out. What grew on a root is
 * this build's too, whenever made, since nothing else builds on it (no cache).
 */
async function buildImages(docker: Docker, trace: BuildTrace, id: BuildIdentity, labelledUntil?: number): Promise<{ images: string[]; chain: number }> {
  const all = await docker.listImages({ all: true });
  const ours = new Set<string>();
  for (const short of trace.images) {
    const found = all.find((i) => i.Id.replace(/^sha256:/, '').startsWith(short));
    if (found) ours.add(found.Id);
  }
  const labels = Object.entries(id.labels);
  if (labelledUntil !== undefined && labels.length > 0) {
    const [from, to] = [Math.floor(id.startedAt / 1000) - 1, Math.floor(labelledUntil / 1000) + 1]; // Created: whole seconds
    for (const image of all) {
      if (image.Created >= from && image.Created <= to && labels.every(([k, v]) => image.Labels?.[k] === v)) ours.add(image.Id);
    }
  }
  for (let grew = true; grew; ) {
    grew = false;
    for (const image of all) {
      if (!ours.has(image.Id) && ours.has(image.ParentId)) {
        ours.add(image.Id);
        grew = true;
      }
    }
  }
  const mine = all.filter((i) => ours.has(i.Id) && !id.bases.has(i.Id) && (i.RepoTags ?? []).every((t) => t === id.tag || t === UNTAGGED));
  const byId = new Map(mine.map((i) => [i.Id, i]));
  const depth = (i: Docker.ImageInfo): number => {
    const parent = byId.get(i.ParentId);
    return 1 + (parent ? depth(parent) : 0);
  };
  // Children first: an image with a child still in the set waits for a later round.
  const images: string[] = [];
  const left = new Set(byId.keys());
  while (left.size > 0) {
    const leaves = mine.filter((i) => left.has(i.Id) && !mine.some((c) => left.has(c.Id) && c.ParentId === i.Id));
    if (leaves.length === 0) break;
    for (const leaf of leaves) {
      images.push(leaf.Id);
      left.delete(leaf.Id);
    }
  }
  return { images, chain: Math.max(0, ...mine.map(depth)) };
}

const CONFLICT_RETRIES = 10;
const CONFLICT_PAUSE_MS = 500;

/**
 * Removes the intermediate containers and the images (children first). An image still in use (409: its
 * step's container is still being removed, on a busy engine) is tried again a few times.
 */
async function remove(docker: Docker, trace: BuildTrace, images: string[]): Promise<void> {
  for (const container of trace.containers) {
    await docker
      .getContainer(container)
      .remove({ force: true, v: true })
      .catch((err: unknown) => statusCode(err) === 409 || ignoreGone(err)); // 409: the engine is removing it already
  }
  let left = images;
  for (let attempt = 0; left.length > 0 && attempt < CONFLICT_RETRIES; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, CONFLICT_PAUSE_MS).unref());
    const busy: string[] = [];
    // By id: an image with only this build's tag loses it with the image; nothing is pruned beyond the set.
    for (const image of left) {
      await docker
        .getImage(image)
        .remove({ noprune: true })
        .catch((err: unknown) => (statusCode(err) === 409 ? busy.push(image) : ignoreGone(err)));
    }
    left = busy;
  }
}

/**
 * After a build the engine is done with (it ended, pushed or not): what its output showed it made is
 * still there if the build failed, or if the engine could not prune it when the tag went.
 */
export async function removeBuildLeftovers(docker: Docker, trace: BuildTrace, id: BuildIdentity): Promise<void> {
  await remove(docker, trace, (await buildImages(docker, trace, id)).images);
}

/**
 * After a cancel, once the engine had begun the build's steps. Removing an image while the engine is
 * still making the next step on it would leave that step's image without a parent, found by nothing (the
 * engine creates the image, then fails to link it). So this waits until the build's last step has been
 * committed, or, if the engine stopped earlier, for `quietMs` (long enough for any step to finish); then
 * the images go. It runs after the cancel has been reported, so the caller does not wait for a step it
 * no longer wants, on timers that keep no process alive.
 */
export async function sweepAfterCancel(docker: Docker, trace: BuildTrace, id: BuildIdentity, quietMs: number, pollMs = 500): Promise<void> {
  const cancelledAt = Date.now();
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms).unref());
  while (Date.now() < cancelledAt + quietMs && (await buildImages(docker, trace, id, cancelledAt)).chain < id.steps) await sleep(pollMs);
  await sleep(pollMs); // a last step's image is tagged just after it is committed
  await remove(docker, trace, (await buildImages(docker, trace, id, cancelledAt)).images);
}
