-- RFM scores stored packed: a run's scores in chunks of up to 65,536
-- members sorted by member id, fixed-width records of 37 bytes each
-- (`services/analytics/src/rfm/packed.rs` documents the layout). A run of
-- a million members is 16 rows instead of a million indexed rows; readers
-- decode the run once and look members up in memory.
--
-- Replaces rfm_scores (nothing was released with it, so no data moves: the
-- next run stores its scores here).

DROP TABLE rfm_scores;

-- The latest run's chunks only (a run deletes the previous run's rows).
CREATE TABLE rfm_score_chunks (
    program_id   text NOT NULL,
    run_id       uuid NOT NULL,
    chunk        int NOT NULL,    -- 0, 1, 2, ... in member order
    first_member uuid NOT NULL,   -- the chunk's smallest member id
    members      int NOT NULL,    -- records in data
    data         bytea NOT NULL,  -- members x 37 bytes
    PRIMARY KEY (program_id, run_id, chunk)
);
-- Out of line and uncompressed (EXTERNAL): writing a chunk is a plain copy
-- of its bytes, with no compression pass over them.
ALTER TABLE rfm_score_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
