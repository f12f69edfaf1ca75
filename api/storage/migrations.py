"""Append-only schema migrations. Never edit an applied entry: add a new one.

Each API object is stored whole as `obj` (the exact JSON the API returns) beside the
columns that queries filter or order on; `seq` gives a total insertion order for
cursor pagination, since `created_at` only has second resolution.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 0: bookkeeping is created by the runner itself.
    """
    CREATE TABLE assistants (
        id text PRIMARY KEY,
        seq bigserial UNIQUE,
        obj jsonb NOT NULL
    );
    CREATE TABLE threads (
        id text PRIMARY KEY,
        seq bigserial UNIQUE,
        obj jsonb NOT NULL
    );
    CREATE TABLE messages (
        id text PRIMARY KEY,
        seq bigserial UNIQUE,
        thread_id text NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
        run_id text,
        obj jsonb NOT NULL
    );
    CREATE INDEX messages_thread_seq ON messages (thread_id, seq);
    CREATE TABLE runs (
        id text PRIMARY KEY,
        seq bigserial UNIQUE,
        thread_id text NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
        status text NOT NULL,
        job_id bigint,
        config jsonb NOT NULL,
        obj jsonb NOT NULL
    );
    CREATE INDEX runs_thread_seq ON runs (thread_id, seq);
    CREATE INDEX runs_active ON runs (thread_id)
        WHERE status IN ('queued', 'in_progress', 'requires_action', 'cancelling');
    CREATE TABLE run_steps (
        id text PRIMARY KEY,
        seq bigserial UNIQUE,
        run_id text NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        pending_usage jsonb,
        obj jsonb NOT NULL
    );
    CREATE INDEX run_steps_run_seq ON run_steps (run_id, seq);
    -- Event payloads too large for NOTIFY, read by streams in other processes.
    CREATE TABLE run_event_payloads (
        id bigserial PRIMARY KEY,
        run_id text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        payload jsonb NOT NULL
    );
    """,
    # 1: the job queue's own schema (procrastinate) as a whole; its later releases' migration files
    # are applied by `migrate` itself, tracked in a table of their own.
    "PROCRASTINATE_SCHEMA",
    # 2: tenancy. Every object belongs to a tenant; with auth off everything is 'default'.
    """
    ALTER TABLE assistants ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
    ALTER TABLE threads ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
    ALTER TABLE messages ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
    ALTER TABLE runs ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
    ALTER TABLE run_steps ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
    CREATE INDEX assistants_tenant_seq ON assistants (tenant_id, seq);
    CREATE TABLE api_keys (
        id text PRIMARY KEY,
        seq bigserial UNIQUE,
        tenant_id text NOT NULL,
        key_hash text NOT NULL UNIQUE,
        revoked_at bigint,
        model_api_key bytea,
        obj jsonb NOT NULL
    );
    """,
    # 3: expiry is swept from the runs table instead of one scheduled job per run.
    """
    ALTER TABLE runs ADD COLUMN expires_at bigint;
    CREATE INDEX runs_expiring ON runs (expires_at)
        WHERE status IN ('queued', 'in_progress', 'requires_action', 'cancelling');
    ALTER TABLE runs DROP COLUMN job_id;
    """,
    # 4: files, vector stores and their chunks (pgvector + full text).
    """
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE files (
        id text PRIMARY KEY,
        seq bigserial UNIQUE,
        tenant_id text NOT NULL,
        purpose text NOT NULL,
        storage_path text NOT NULL,
        obj jsonb NOT NULL
    );
    CREATE INDEX files_tenant_seq ON files (tenant_id, seq);
    CREATE TABLE vector_stores (
        id text PRIMARY KEY,
        seq bigserial UNIQUE,
        tenant_id text NOT NULL,
        embedding_model text NOT NULL,
        embedding_dimension integer NOT NULL,
        obj jsonb NOT NULL
    );
    CREATE INDEX vector_stores_tenant_seq ON vector_stores (tenant_id, seq);
    CREATE TABLE vector_store_file_batches (
        id text PRIMARY KEY,
        seq bigserial UNIQUE,
        tenant_id text NOT NULL,
        vector_store_id text NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
        obj jsonb NOT NULL
    );
    CREATE TABLE vector_store_files (
        vector_store_id text NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
        file_id text NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        seq bigserial UNIQUE,
        tenant_id text NOT NULL,
        status text NOT NULL,
        batch_id text REFERENCES vector_store_file_batches(id) ON DELETE SET NULL,
        obj jsonb NOT NULL,
        PRIMARY KEY (vector_store_id, file_id)
    );
    CREATE INDEX vector_store_files_batch ON vector_store_files (batch_id);
    -- One row per chunk. The embedding column has no fixed dimension (stores may use different
    -- models); HNSW indexes are per dimension, on a cast expression (see retrieval).
    CREATE TABLE chunks (
        id bigserial PRIMARY KEY,
        vector_store_id text NOT NULL,
        file_id text NOT NULL,
        chunk_index integer NOT NULL,
        content text NOT NULL,
        token_count integer NOT NULL,
        metadata jsonb NOT NULL DEFAULT '{}',
        embedding vector NOT NULL,
        tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED,
        FOREIGN KEY (vector_store_id, file_id) REFERENCES vector_store_files (vector_store_id, file_id) ON DELETE CASCADE
    );
    CREATE INDEX chunks_store_file ON chunks (vector_store_id, file_id);
    CREATE INDEX chunks_tsv ON chunks USING gin (tsv);
    """,
    # 5: vector store bookkeeping. Counts, status and usage are computed from the rows (never
    # stored), so deletes and cascades can't leave them stale; `attempt` fences an ingestion job
    # against a re-attach, a cancel or a detach that happened while it ran.
    """
    ALTER TABLE vector_stores ADD COLUMN last_active_at bigint NOT NULL DEFAULT 0;
    ALTER TABLE vector_stores ADD COLUMN expires_after_days integer;
    ALTER TABLE vector_stores ADD COLUMN expired boolean NOT NULL DEFAULT false;
    CREATE INDEX vector_stores_expiring ON vector_stores ((last_active_at + expires_after_days * 86400))
        WHERE expires_after_days IS NOT NULL AND NOT expired;
    ALTER TABLE vector_store_files ADD COLUMN attempt text;
    ALTER TABLE vector_store_files ADD COLUMN usage_bytes bigint NOT NULL DEFAULT 0;
    ALTER TABLE vector_store_files ADD COLUMN chunk_count integer NOT NULL DEFAULT 0;
    CREATE INDEX vector_store_files_store_seq ON vector_store_files (vector_store_id, seq);
    CREATE INDEX vector_store_files_file ON vector_store_files (file_id);
    CREATE INDEX vector_store_file_batches_store ON vector_store_file_batches (vector_store_id);
    -- Keyword queries: the lexemes of chunks.tsv ('simple': lower-cased, unstemmed) minus English
    -- stop words, so "how long are backups kept" asks for long & backups & kept.
    CREATE TEXT SEARCH DICTIONARY assistgraph_simple_stop (TEMPLATE = pg_catalog.simple, STOPWORDS = english);
    CREATE TEXT SEARCH CONFIGURATION assistgraph_query (COPY = pg_catalog.simple);
    ALTER TEXT SEARCH CONFIGURATION assistgraph_query
        ALTER MAPPING FOR asciiword, word, asciihword, hword, hword_asciipart, hword_part
        WITH assistgraph_simple_stop;
    """,
    # 6: OpenAPI actions. `document` is the registered spec; `credentials` is Fernet-encrypted JSON
    # (ASSISTGRAPH_SECRET_KEY), kept out of `obj` so no response can ever include it.
    """
    CREATE TABLE actions (
        id text PRIMARY KEY,
        seq bigserial UNIQUE,
        tenant_id text NOT NULL,
        document jsonb NOT NULL,
        credentials bytea,
        obj jsonb NOT NULL
    );
    CREATE INDEX actions_tenant_seq ON actions (tenant_id, seq);
    """,
    # 7: durable, resumable runs. Every event a run publishes is kept, numbered per run
    # (`runs.event_seq` hands out the numbers, so they follow commit order), for streams that
    # re-attach from an event id and streams that missed a notification; large events are read
    # from here by number, which replaces the parked-payload table. `updated_at` dates each status
    # change, for the sweep that recovers runs whose execution was lost.
    """
    ALTER TABLE runs ADD COLUMN event_seq integer NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
    CREATE TABLE run_events (
        run_id text NOT NULL,
        seq integer NOT NULL,
        event text NOT NULL,
        data text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (run_id, seq)
    );
    CREATE INDEX run_events_created ON run_events (created_at);
    DROP TABLE run_event_payloads;
    """,
    # 8: code_interpreter kernels kept in a Jupyter Kernel Gateway: which kernel is a thread's,
    # so a run on any worker finds its thread's session.
    """
    CREATE TABLE code_interpreter_kernels (
        key text PRIMARY KEY,
        kernel_id text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    """,
    # 9: ingestion jobs are deferred with a priority that falls with the tenant's backlog of files
    # in progress (counted here), so one tenant's thousand files do not queue ahead of another's one.
    """
    CREATE INDEX vector_store_files_tenant_in_progress ON vector_store_files (tenant_id) WHERE status = 'in_progress';
    """,
    # 10: MCP servers registered per tenant. `headers` is Fernet-encrypted JSON (ASSISTGRAPH_SECRET_KEY),
    # kept out of `obj` so no response can include it; `tools` is the server's tool listing as the
    # MCP protocol gives it, from registration or the last refresh. The tool listings of servers the
    # operator configures (for every tenant) are kept by server id, with a fingerprint of the
    # configuration they were listed with.
    """
    CREATE TABLE mcp_servers (
        id text PRIMARY KEY,
        seq bigserial UNIQUE,
        tenant_id text NOT NULL,
        url text NOT NULL,
        transport text NOT NULL,
        headers bytea,
        tools jsonb NOT NULL,
        obj jsonb NOT NULL
    );
    CREATE INDEX mcp_servers_tenant_seq ON mcp_servers (tenant_id, seq);
    CREATE TABLE mcp_shared_tools (
        id text PRIMARY KEY,
        fingerprint text NOT NULL,
        tools jsonb NOT NULL,
        refreshed_at bigint NOT NULL
    );
    """,
    # 11: the Responses and Conversations APIs over the same threads and runs. A conversation is a
    # thread; its items are the thread's messages, plus items the Assistants API has no message for
    # (system and developer messages, function calls and outputs given as input), kept in `messages`
    # with kind 'item' and left out of the Assistants views. Messages and run steps take their
    # `item_seq` from one sequence, so a conversation lists the messages and the tool calls of its
    # runs in the order they were written (rows written before this version are ordered by creation
    # second). A response is a run, or the part of a run after a client's function outputs
    # (`steps_after`: the run's steps before it belong to the response that called the functions).
    """
    ALTER TABLE messages ADD COLUMN kind text NOT NULL DEFAULT 'message';
    ALTER TABLE messages ADD COLUMN item_seq bigint;
    ALTER TABLE run_steps ADD COLUMN item_seq bigint;
    CREATE TEMP TABLE legacy_item_order ON COMMIT DROP AS
        SELECT t, id, row_number() OVER (ORDER BY created, rank, seq) AS n FROM (
            SELECT 'm' AS t, id, (obj->>'created_at')::bigint AS created,
                   CASE WHEN run_id IS NULL THEN 0 ELSE 2 END AS rank, seq FROM messages
            UNION ALL
            SELECT 's', id, (obj->>'created_at')::bigint, 1, seq FROM run_steps
        ) AS rows;
    UPDATE messages m SET item_seq = o.n FROM legacy_item_order o WHERE o.t = 'm' AND o.id = m.id;
    UPDATE run_steps s SET item_seq = o.n FROM legacy_item_order o WHERE o.t = 's' AND o.id = s.id;
    CREATE SEQUENCE conversation_item_seq;
    SELECT setval('conversation_item_seq', (SELECT count(*) FROM legacy_item_order) + 1, false);
    ALTER TABLE messages ALTER COLUMN item_seq SET DEFAULT nextval('conversation_item_seq');
    ALTER TABLE messages ALTER COLUMN item_seq SET NOT NULL;
    ALTER TABLE run_steps ALTER COLUMN item_seq SET DEFAULT nextval('conversation_item_seq');
    ALTER TABLE run_steps ALTER COLUMN item_seq SET NOT NULL;
    CREATE TABLE responses (
        id text PRIMARY KEY,
        seq bigserial UNIQUE,
        tenant_id text NOT NULL,
        thread_id text NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
        run_id text NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        -- false: never listed, retrieved or continued; deleted with its thread once settled
        stored boolean NOT NULL,
        -- true: the thread is a conversation the client named; false: the thread is the hidden one
        -- of a chain of responses (previous_response_id)
        in_conversation boolean NOT NULL,
        steps_after bigint NOT NULL,
        -- the run's events numbered above this one are this response's
        first_event integer NOT NULL,
        input jsonb NOT NULL,
        obj jsonb NOT NULL
    );
    CREATE INDEX responses_run ON responses (run_id, seq);
    CREATE INDEX responses_thread ON responses (thread_id, seq);
    CREATE INDEX responses_unstored ON responses (tenant_id) WHERE NOT stored;
    """,
]
