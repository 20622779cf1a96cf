-- Page titles, kept by thread name (as the fjall engine's `titles` keyspace): an import sets
-- the title its source had, whether or not the thread has comments yet, and a remap moves it
-- with the thread. A new table: no row of the first schema changes meaning.
CREATE TABLE titles (
    thread text PRIMARY KEY,
    title text NOT NULL
);
