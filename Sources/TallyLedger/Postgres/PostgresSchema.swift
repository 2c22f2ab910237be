import PostgresNIO
import TallyCore

/// The PostgreSQL ledger's schema, as versioned migrations.
///
/// The layout follows the SQLite one (`SQLiteSchema`), with what a shared database adds:
/// - `raw_events` is range-partitioned by month on `ts` (microseconds since the epoch), one
///   partition `raw_events_YYYY_MM` per month, created ahead by the collectors
///   (``PostgresLedgerStore/ensurePartitions(_:)``). An old month can be detached and archived
///   without touching live ones (`deploy/CLUSTER.md`). Refused events are not in it: they live
///   in `refused_events`, so archival never takes an explanation away from a batch.
/// - Aggregate sums and maxima are `numeric`: exact, summed by the database when the log is
///   folded; a CHECK keeps them inside Tally's exact 128-bit range (`tally_sum_range`).
/// - `aggregate_log.total` is the sum of the batch's quantities: with `ledger_bounds`, the
///   cheap upper bound that lets a commit skip the exact overflow check.
/// - `batches (agent, seq)` is the primary key: a batch resent to another collector after a
///   failover finds the original record and gets the original ack.
///
/// Migrations run in one transaction under a transaction-level advisory lock, so collectors
/// that start at the same moment migrate once (the others wait, then find the work done), and a
/// transaction-pooling PgBouncer is fine. A database migrated by a newer Tally is refused.
enum PostgresSchema {
    /// Keys of `pg_advisory_xact_lock`, in Tally's own namespace (an arbitrary constant).
    static let lockNamespace: Int32 = 0x7A11
    /// The advisory locks of level series (``Levels``): `(levelLockNamespace, hashtext(tenant ||
    /// '/' || metric))`, held by a batch's transaction while it places the series' new events.
    static let levelLockNamespace: Int32 = 0x7A12
    enum Lock: Int32 {
        case migrate = 1, fold = 2, partitions = 3, overflow = 4
    }

    /// The largest quantity Tally represents exactly: Int128.max nano-units.
    static let maximumQuantity = "170141183460469231731687303715.884105727"

    static let migrations: [String] = [
        // 1: the ledger, its aggregates and the billing tables.
        """
        CREATE TABLE raw_events (
            ts bigint NOT NULL,
            fingerprint bytea NOT NULL,
            tenant text NOT NULL,
            metric text NOT NULL,
            quantity text NOT NULL,
            event_id text,
            properties bytea NOT NULL,
            status text NOT NULL,
            billed_in text,
            agent text NOT NULL,
            batch_seq bigint NOT NULL,
            batch_index integer NOT NULL,
            received_at bigint NOT NULL,
            PRIMARY KEY (ts, fingerprint)
        ) PARTITION BY RANGE (ts);

        CREATE TABLE duplicate_events (
            agent text NOT NULL,
            batch_seq bigint NOT NULL,
            batch_index integer NOT NULL,
            ts bigint NOT NULL,
            fingerprint bytea NOT NULL,
            tenant text NOT NULL,
            metric text NOT NULL,
            quantity text NOT NULL,
            received_at bigint NOT NULL,
            PRIMARY KEY (agent, batch_seq, batch_index)
        );

        CREATE TABLE refused_events (
            agent text NOT NULL,
            batch_seq bigint NOT NULL,
            batch_index integer NOT NULL,
            reason text NOT NULL,
            field text,
            message text NOT NULL,
            tenant text,
            metric text,
            ts bigint,
            fingerprint bytea,
            quantity text,
            event_id text,
            properties bytea,
            source text,
            received_at bigint NOT NULL,
            PRIMARY KEY (agent, batch_seq, batch_index)
        );

        CREATE TABLE batches (
            agent text NOT NULL,
            seq bigint NOT NULL,
            received_at bigint NOT NULL,
            accepted integer NOT NULL,
            duplicate integer NOT NULL,
            late integer NOT NULL,
            adjusted integer NOT NULL,
            rejected integer NOT NULL,
            rejections text NOT NULL,
            digest bytea NOT NULL,
            PRIMARY KEY (agent, seq)
        );
        CREATE INDEX batches_received_at ON batches (received_at);

        CREATE TABLE pruned_batches (agent text PRIMARY KEY, through_seq bigint NOT NULL);

        \(aggregateTable("usage_hourly"))
        \(aggregateTable("usage_daily"))
        \(aggregateTable("usage_monthly"))
        CREATE INDEX usage_hourly_adjustments ON usage_hourly (tenant, metric, billed_in) WHERE billed_in <> '';

        CREATE TABLE unique_values (
            tenant text NOT NULL,
            metric text NOT NULL,
            property text NOT NULL,
            period text NOT NULL,
            value text NOT NULL,
            billed_in text NOT NULL,
            PRIMARY KEY (tenant, metric, property, period, value)
        );
        CREATE INDEX unique_values_adjustments ON unique_values (tenant, metric, property, billed_in) WHERE billed_in <> period;

        CREATE TABLE reconciliation (
            period text NOT NULL,
            tenant text NOT NULL,
            agent text NOT NULL,
            received bigint NOT NULL,
            accepted bigint NOT NULL,
            duplicate bigint NOT NULL,
            late bigint NOT NULL,
            adjusted bigint NOT NULL,
            rejected bigint NOT NULL,
            PRIMARY KEY (period, tenant, agent)
        );
        CREATE INDEX reconciliation_tenant ON reconciliation (tenant);

        CREATE TABLE aggregate_log (
            id bigserial PRIMARY KEY,
            cells bytea NOT NULL,
            total numeric NOT NULL
        );
        -- A batch's cells are written once and read once by the fold: compressing them (TOAST's
        -- default) costs the database more CPU than the bytes it saves.
        ALTER TABLE aggregate_log ALTER COLUMN cells SET STORAGE EXTERNAL;

        CREATE TABLE ledger_bounds (
            id integer PRIMARY KEY CHECK (id = 1),
            monthly_ceiling numeric NOT NULL
        );
        INSERT INTO ledger_bounds VALUES (1, 0);

        CREATE TABLE final_invoices (
            tenant text NOT NULL,
            period text NOT NULL,
            json text NOT NULL,
            sha256 text NOT NULL,
            finalized_at bigint NOT NULL,
            PRIMARY KEY (tenant, period)
        );

        CREATE TABLE usage_exports (
            identifier text PRIMARY KEY,
            tenant text NOT NULL,
            metric text NOT NULL,
            hour bigint NOT NULL,
            value text NOT NULL,
            status text NOT NULL,
            attempts integer NOT NULL,
            last_error text,
            sent_at bigint
        );
        CREATE INDEX usage_exports_tenant ON usage_exports (tenant);
        """,
        // 2: the fold generation, bumped by every fold in the fold's transaction: a reader that
        // finds the log empty and the generation unchanged knows its cached answers are current.
        "ALTER TABLE ledger_bounds ADD COLUMN fold_generation bigint NOT NULL DEFAULT 0",
        // 3: when each export record was last sent, acknowledged or not (`tallyctl usage exports`).
        "ALTER TABLE usage_exports ADD COLUMN attempted_at bigint",
        // 4: usage alerts, one row per threshold crossed per tenant and period (AlertRecord).
        """
        CREATE TABLE usage_alerts (
            identifier text PRIMARY KEY,
            tenant text NOT NULL,
            alert text NOT NULL,
            period text NOT NULL,
            metric text,
            kind text NOT NULL,
            threshold text NOT NULL,
            observed text NOT NULL,
            limit_value text NOT NULL,
            crossed_at bigint NOT NULL,
            status text NOT NULL,
            attempts integer NOT NULL,
            last_error text,
            attempted_at bigint,
            delivered_at bigint,
            next_attempt_at bigint NOT NULL
        );
        CREATE INDEX usage_alerts_due ON usage_alerts (status, next_attempt_at)
        """,
        // 5: a trace finds an event's later copies (duplicates) by its key.
        "CREATE INDEX duplicate_events_key ON duplicate_events (ts, fingerprint)",
        // 6: corrections (CorrectionRecord), in the order made (id); raw events are never changed.
        """
        CREATE TABLE corrections (
            id bigserial PRIMARY KEY,
            key text NOT NULL UNIQUE,
            tenant text NOT NULL,
            metric text NOT NULL,
            ts bigint NOT NULL,
            fingerprint bytea NOT NULL,
            action text NOT NULL,
            quantity_before text NOT NULL,
            properties_before bytea NOT NULL,
            quantity_after text,
            properties_after bytea,
            billed_in text NOT NULL,
            reason text NOT NULL,
            actor text NOT NULL,
            created_at bigint NOT NULL
        );
        CREATE INDEX corrections_event ON corrections (ts, fingerprint)
        """,
        // 7: the smallest quantity of each aggregate cell (issue 15); NULL in rows written
        // before, whose minimum was not recorded (UsageAggregate.min). Collectors of an older
        // version must be stopped before one of this version starts: their folds would leave
        // `min` unchanged while adding events to a cell.
        """
        ALTER TABLE usage_hourly ADD COLUMN min numeric;
        ALTER TABLE usage_daily ADD COLUMN min numeric;
        ALTER TABLE usage_monthly ADD COLUMN min numeric
        """,
        // 8: backfills (BackfillRecord): imports of historical events, their counts and reverts.
        """
        CREATE TABLE backfills (
            id text PRIMARY KEY,
            reason text NOT NULL,
            actor text NOT NULL,
            source text NOT NULL,
            started_at bigint NOT NULL,
            received bigint NOT NULL,
            accepted bigint NOT NULL,
            duplicate bigint NOT NULL,
            late bigint NOT NULL,
            adjusted bigint NOT NULL,
            rejected bigint NOT NULL,
            finished boolean NOT NULL,
            reverted_at bigint,
            revert_reason text
        )
        """,
        // 9: level changes of weighted_sum metrics (Levels): two columns of each aggregate table,
        // 0 in every existing row, and each level event's key and quantity. Collectors of an
        // older version must be stopped before one of this version starts: their folds would drop
        // level changes.
        """
        ALTER TABLE usage_hourly ADD COLUMN level_delta numeric NOT NULL DEFAULT 0;
        ALTER TABLE usage_hourly ADD COLUMN level_time numeric NOT NULL DEFAULT 0;
        ALTER TABLE usage_daily ADD COLUMN level_delta numeric NOT NULL DEFAULT 0;
        ALTER TABLE usage_daily ADD COLUMN level_time numeric NOT NULL DEFAULT 0;
        ALTER TABLE usage_monthly ADD COLUMN level_delta numeric NOT NULL DEFAULT 0;
        ALTER TABLE usage_monthly ADD COLUMN level_time numeric NOT NULL DEFAULT 0;
        CREATE TABLE levels (
            tenant text NOT NULL,
            metric text NOT NULL,
            ts bigint NOT NULL,
            fingerprint bytea NOT NULL,
            quantity text NOT NULL,
            PRIMARY KEY (tenant, metric, ts, fingerprint)
        )
        """,
        // 10: a batch's reconciliation counts travel through the aggregate log with its cells
        // (ReconciliationLogCodec) and are summed into `reconciliation` by the fold: one upsert
        // per (period, tenant, agent) per fold instead of one per batch. The tables the fold
        // updates in place leave room on each page, so an update stays on its page (a HOT
        // update) and touches no index.
        """
        ALTER TABLE aggregate_log ADD COLUMN reconciliation bytea;
        ALTER TABLE aggregate_log ALTER COLUMN reconciliation SET STORAGE EXTERNAL;
        ALTER TABLE reconciliation SET (fillfactor = 70);
        ALTER TABLE usage_hourly SET (fillfactor = 70);
        ALTER TABLE usage_daily SET (fillfactor = 70);
        ALTER TABLE usage_monthly SET (fillfactor = 70)
        """,
        // 11: aggregate log rows in the compact layout (AggregateLogCodec). No table changes:
        // the number makes a collector of before, which cannot decode those rows, refuse the
        // database; rows it logged and no fold took yet still decode.
        """
        COMMENT ON TABLE aggregate_log IS 'cells: AggregateLogCodec rows, in the compact layout since schema version 11'
        """,
    ]

    static func aggregateTable(_ name: String) -> String {
        """
        CREATE TABLE \(name) (
            tenant text NOT NULL,
            metric text NOT NULL,
            hour bigint NOT NULL,
            dimension text NOT NULL,
            value text NOT NULL,
            billed_in text NOT NULL,
            sum numeric NOT NULL CONSTRAINT \(name)_tally_sum_range CHECK (sum <= \(maximumQuantity)),
            count bigint NOT NULL,
            max numeric NOT NULL,
            latest_ts bigint NOT NULL,
            latest_fp bytea NOT NULL,
            latest_quantity text NOT NULL,
            PRIMARY KEY (tenant, metric, hour, dimension, value, billed_in)
        );
        """
    }

    static func table(_ grain: AggregateGrain) -> String {
        switch grain {
        case .hour: "usage_hourly"
        case .day: "usage_daily"
        case .month: "usage_monthly"
        }
    }

    /// Brings the database to the latest version, or refuses one from a newer Tally.
    static func migrate(_ session: PostgresSession) throws(LedgerError) {
        try session.transaction("migrating the ledger schema") { () throws(LedgerError) in
            try session.query(
                "SELECT pg_advisory_xact_lock(\(lockNamespace), \(Lock.migrate.rawValue))", "taking the migration lock")
            try session.execute(
                """
                CREATE TABLE IF NOT EXISTS tally_schema_migrations (
                    version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())
                """, "creating the migrations table")
            let rows = try session.query("SELECT COALESCE(MAX(version), 0) FROM tally_schema_migrations", "reading the schema version")
            let current = try rows.first.map { (row: PostgresRow) throws(LedgerError) in try decode(row, Int32.self, "schema version") } ?? 0
            guard current <= migrations.count else {
                throw .invalidConfiguration(
                    "the ledger database has schema version \(current), newer than this Tally knows (\(migrations.count)): "
                        + "run a collector of the version that migrated it, or newer")
            }
            for version in Int(current)..<migrations.count {
                // One statement per query (the extended protocol takes one); the migrations hold
                // no semicolons inside statements.
                for statement in migrations[version].split(separator: ";") where !statement.allSatisfy(\.isWhitespace) {
                    try session.execute(String(statement), "applying migration \(version + 1)")
                }
                try session.query(
                    "INSERT INTO tally_schema_migrations (version) VALUES (\(Int32(version + 1)))", "recording migration \(version + 1)")
            }
        }
    }

    static func decode<T: PostgresDecodable>(_ row: PostgresRow, _ type: T.Type, _ what: String) throws(LedgerError) -> T {
        do {
            return try row.decode(T.self)
        } catch {
            throw .corruptRow("\(what): \(error)")
        }
    }
}
