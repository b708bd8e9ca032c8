/**
 * The Docker engine's progress streams (build, pull, push): one JSON object per line, split anywhere by
 * the transport. Read as they come, so a person watching the build's log sees each line when it happens.
 */

export interface EngineMessage {
  stream?: string;
  status?: string;
  id?: string;
  progress?: string;
  progressDetail?: { current?: number; total?: number };
  error?: string;
  errorDetail?: { message?: string };
  aux?: { ID?: string; Digest?: string; Tag?: string; Size?: number };
}

export async function* engineMessages(stream: AsyncIterable<Buffer | string>): AsyncGenerator<EngineMessage> {
  let rest = '';
  const parse = (line: string): EngineMessage | undefined => {
    const text = line.trim();
    if (!text) return undefined;
    try {
      return JSON.parse(text) as EngineMessage;
    } catch {
      return { stream: `${text}\n` }; // not JSON: shown as it is rather than lost
    }
  };
  for await (const piece of stream) {
    rest += piece.toString();
    const lines = rest.split('\n');
    rest = lines.pop()!;
    for (const line of lines) {
      const message = parse(line);
      if (message) yield message;
    }
  }
  const last = parse(rest);
  if (last) yield last;
}

/** The error an engine message reports, if it is one. */
export function engineError(m: EngineMessage): string | undefined {
  return m.error ?? m.errorDetail?.message;
}

/**
 * Turns messages into log lines. `stream` text arrives in pieces ("Step 1/3 : FROM x" and its "\n" are
 * two messages), so it is cut into lines here; a `status` is a line of its own, except the many
 * progress ticks of a layer being pulled or pushed ("Pushing [==>   ] 12MB/40MB"), which would flood the log.
 */
export class LogLines {
  private partial = '';

  constructor(private readonly onLog: (line: string) => void) {}

  message(m: EngineMessage): void {
    if (m.stream !== undefined) {
      const lines = (this.partial + m.stream).split('\n');
      this.partial = lines.pop()!;
      for (const line of lines) this.emit(line);
    }
    const error = engineError(m);
    if (error !== undefined) {
      this.flush();
      this.emit(`error: ${error}`);
    } else if (m.status !== undefined && m.progressDetail?.current === undefined) {
      this.flush();
      this.emit(m.id ? `${m.id}: ${m.status}` : m.status);
    }
  }

  line(text: string): void {
    this.flush();
    this.emit(text);
  }

  flush(): void {
    if (this.partial) this.emit(this.partial);
    this.partial = '';
  }

  private emit(line: string): void {
    const text = line.replace(/\r$/, '');
    if (text.trim() !== '') this.onLog(text);
  }
}
