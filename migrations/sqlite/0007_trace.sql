-- Authoring traces of jobs (issue 13): the step records of every action a job's
-- attempts ran, each with its file:line, redacted text, timing, URL, outcome and the
-- evidence hashes of its screenshots, so that `usher jobs trace JOB` can show a failed
-- job step by step. Numbered 0007: 0006 is the console's.
CREATE TABLE job_traces (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   INTEGER NOT NULL,
    attempt  INTEGER NOT NULL,
    action   TEXT NOT NULL,
    steps    TEXT NOT NULL,        -- JSON array of step records (already redacted)
    error    TEXT,                 -- why the action failed (redacted), NULL when it did not
    at       TEXT NOT NULL
);
CREATE INDEX job_traces_job ON job_traces (job_id, id);
