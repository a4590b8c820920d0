-- 0001: the one table bench/db_offload.py works on (applied by sidecar's own migration runner).

CREATE TABLE item (
    k INTEGER PRIMARY KEY,
    v TEXT NOT NULL
) STRICT;
