import type { DatabaseSync } from 'node:sqlite';

// What each token budget (a limits caveat, protocol/limits.ts TokenBudget) holds: the machines
// and volumes a token under it made, and the runs it started. Kept with the machines, in the
// state database, so a restart of the daemon forgets nothing a robot already holds. Counts join
// the live tables: a destroyed machine, a stopped run or a deleted volume no longer counts, with
// no bookkeeping at those steps.

const SCHEMA = `
CREATE TABLE IF NOT EXISTS token_budget_charges (
  budget TEXT NOT NULL, kind TEXT NOT NULL, resource_id TEXT NOT NULL, PRIMARY KEY (budget, kind, resource_id)
);
CREATE INDEX IF NOT EXISTS token_budget_charges_resource ON token_budget_charges(kind, resource_id);
`;

/** The machines whose current run was started under the budget (`?`): the store's running totals count them. */
export const RUNS_OF_BUDGET = "SELECT resource_id FROM token_budget_charges WHERE budget = ? AND kind = 'run'";

/** `machine`: made by it; `run`: the machine's current run, started by it; `volume`: made by it. */
export type ChargeKind = 'machine' | 'run' | 'volume';

export class BudgetStore {
  readonly #db: DatabaseSync;

  constructor(db: DatabaseSync) {
    this.#db = db;
    this.#db.exec(SCHEMA);
  }

  /** Charges `resourceId` to each budget; a `run` is charged to these budgets only (a new start replaces the last's). */
  charge(kind: ChargeKind, resourceId: string, budgets: readonly string[]): void {
    if (kind === 'run') this.#db.prepare("DELETE FROM token_budget_charges WHERE kind = 'run' AND resource_id = ?").run(resourceId);
    const insert = this.#db.prepare('INSERT OR IGNORE INTO token_budget_charges (budget, kind, resource_id) VALUES (?, ?, ?)');
    for (const budget of budgets) insert.run(budget, kind, resourceId);
  }

  /** Machines made under the budget that are not destroyed. */
  liveMachines(budget: string): number {
    const row = this.#db
      .prepare(`SELECT count(*) AS n FROM token_budget_charges c JOIN machines m ON m.id = c.resource_id
        WHERE c.budget = ? AND c.kind = 'machine' AND m.state != 'destroyed'`)
      .get(budget) as { n: number };
    return Number(row.n);
  }

  /** Volumes made under the budget that still exist, and their size in all. */
  volumeTotals(budget: string): { volumes: number; gb: number } {
    const row = this.#db
      .prepare(`SELECT count(*) AS n, coalesce(sum(v.size_gb), 0) AS gb FROM token_budget_charges c JOIN volumes v ON v.id = c.resource_id
        WHERE c.budget = ? AND c.kind = 'volume'`)
      .get(budget) as { n: number; gb: number };
    return { volumes: Number(row.n), gb: Number(row.gb) };
  }

  /** The budgets a volume is charged to (its growth counts against them). */
  volumeBudgets(volumeId: string): string[] {
    return (this.#db.prepare("SELECT budget FROM token_budget_charges WHERE kind = 'volume' AND resource_id = ?").all(volumeId) as Array<{ budget: string }>).map((r) => r.budget);
  }
}
