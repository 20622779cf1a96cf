-- io360's store on PostgreSQL, first schema.
--
-- Comments, changes, thread records, suspension and bans are kept in the same versioned JSON
-- records the fjall engine writes (src/record.rs), so both engines read and write one format
-- and moving a store between them converts nothing. The columns beside a record are what the
-- engine looks rows up by.

-- The counters every write advances, in one row: the last change-feed position, the last
-- comment id and the last thread id. A writing transaction locks this row first and holds the
-- lock until it commits, so writers from every store replica take turns, positions and
-- sequence numbers are assigned in commit order, and none is ever skipped.
CREATE TABLE counters (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    feed bigint NOT NULL,
    comment bigint NOT NULL,
    thread bigint NOT NULL
);
INSERT INTO counters (one, feed, comment, thread) VALUES (true, 0, 0, 0);

CREATE TABLE threads (
    id bigint PRIMARY KEY,
    name text NOT NULL UNIQUE,
    head bigint NOT NULL,
    count bigint NOT NULL,
    closed boolean NOT NULL
);

-- The change feed: one row per committed change, at its position.
CREATE TABLE feed (
    pos bigint PRIMARY KEY,
    thread_id bigint NOT NULL,
    seq bigint NOT NULL,
    comment_id bigint,
    change bytea NOT NULL,
    UNIQUE (thread_id, seq)
);
CREATE INDEX feed_comment ON feed (comment_id) WHERE comment_id IS NOT NULL;

-- Comments; seq is the sequence number of the comment's last change.
CREATE TABLE comments (
    id bigint PRIMARY KEY,
    thread_id bigint NOT NULL,
    seq bigint NOT NULL,
    parent_id bigint,
    author_key text,
    record bytea NOT NULL,
    UNIQUE (thread_id, seq)
);
CREATE INDEX comments_author ON comments (author_key) WHERE author_key IS NOT NULL;

CREATE TABLE idempotency (
    thread_id bigint NOT NULL,
    key text NOT NULL,
    pos bigint NOT NULL,
    fingerprint text NOT NULL,
    at bigint NOT NULL,
    PRIMARY KEY (thread_id, key)
);

CREATE TABLE votes (
    comment_id bigint NOT NULL,
    voter text NOT NULL,
    value smallint NOT NULL,
    PRIMARY KEY (comment_id, voter)
);

-- The moderation queue.
CREATE TABLE pending (comment_id bigint PRIMARY KEY);

-- Approved comments per author key.
CREATE TABLE authors (key text PRIMARY KEY, approved bigint NOT NULL);

-- Imported comments' source ids: permanent, so an import never writes a source comment twice.
CREATE TABLE sources (source text PRIMARY KEY, comment_id bigint NOT NULL UNIQUE);

-- The suspension and the bans.
CREATE TABLE settings (name text PRIMARY KEY, value bytea NOT NULL);
