/**
 * Replaces secret values in a byte stream that arrives in arbitrary pieces. Only the end of a piece that
 * could still grow into a value is held back, so a value split across two pieces is still found while a
 * line with no such tail reaches the log at once; `end()` releases the rest. The output is the same however
 * the input was cut, which lets a resumed reader skip what was stored.
 */
export const MASK = Buffer.from('***');
/** Shorter values would mask ordinary text; they are still kept out of every other place. */
export const MIN_MASKED_LENGTH = 3;

export class Masker {
  private readonly needles: Buffer[];
  private readonly longest: number;
  private pending: Buffer = Buffer.alloc(0);

  constructor(values: readonly string[]) {
    const unique = [...new Set(values.filter((v) => Buffer.byteLength(v) >= MIN_MASKED_LENGTH))];
    // Longest first, so a value containing another is masked whole.
    this.needles = unique.map((v) => Buffer.from(v)).sort((a, b) => b.length - a.length);
    this.longest = this.needles[0]?.length ?? 0;
  }

  push(piece: Buffer): Buffer {
    if (this.needles.length === 0) return piece;
    const buf = Buffer.concat([this.pending, piece]);
    const { out, consumed } = this.scan(buf, false);
    this.pending = buf.subarray(consumed);
    return out;
  }

  end(): Buffer {
    const { out } = this.scan(this.pending, true);
    this.pending = Buffer.alloc(0);
    return out;
  }

  /**
   * The first position from `from` where a value may start but the buffer ends before it could be told:
   * what follows decides it, so nothing from there on may be emitted yet.
   */
  private undecided(buf: Buffer, from: number): number {
    for (let p = Math.max(from, buf.length - this.longest + 1); p < buf.length; p++) {
      const rest = buf.length - p;
      if (this.needles.some((n) => n.length > rest && buf.compare(n, 0, rest, p) === 0)) return p;
    }
    return buf.length;
  }

  /** Masks every match that is decided, and emits everything before the first undecided position. */
  private scan(buf: Buffer, final: boolean): { out: Buffer; consumed: number } {
    const parts: Buffer[] = [];
    let from = 0;
    for (;;) {
      const safe = final ? buf.length : this.undecided(buf, from);
      // The earliest match from here; on a tie the longest needle wins (they are sorted longest first).
      let at = -1;
      let hit: Buffer | undefined;
      for (const n of this.needles) {
        const p = buf.indexOf(n, from);
        if (p !== -1 && (at === -1 || p < at)) {
          at = p;
          hit = n;
        }
      }
      if (!hit || at >= safe) {
        parts.push(buf.subarray(from, safe));
        return { out: Buffer.concat(parts), consumed: safe };
      }
      parts.push(buf.subarray(from, at), MASK);
      from = at + hit.length;
    }
  }
}

/** The strings to mask for a run's sensitive values (non-strings as their JSON text). */
export function secretStrings(secrets: Record<string, unknown>): string[] {
  return Object.values(secrets).map((v) => (typeof v === 'string' ? v : JSON.stringify(v)));
}
