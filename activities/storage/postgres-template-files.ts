import type { Db } from '../../core/db/pool.js';
import { readSourceArchive } from '../../core/db/template-sources.js';
import type { TemplateFileStore } from '../execution/adapter.js';

/** Ad-hoc template files for a node inside the cluster (the built-in node `local`): straight from Postgres. */
export class PostgresTemplateFiles implements TemplateFileStore {
  constructor(private readonly db: Db) {}

  async read(sourceId: string): Promise<Buffer> {
    const archive = await readSourceArchive(this.db, sourceId);
    if (!archive) throw new Error(`template source ${sourceId} does not exist`);
    return archive;
  }
}
