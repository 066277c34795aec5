-- The filters of one slice of the job list (queries/read/list_jobs.sql, both branches).
AND ($2::text IS NULL OR queue = $2)
AND ($3::text IS NULL OR kind = $3)
AND ($4::text IS NULL OR target = $4)
-- A labelled job: the predicate of jobs_labels, which holds labelled jobs only.
AND ($5::text IS NULL OR (labels <> '{}'::jsonb AND labels @> jsonb_build_object($5::text, $6::text)))
AND ($7::timestamptz IS NULL OR created_at >= $7)
AND ($8::timestamptz IS NULL OR created_at < $8)
AND ($9::uuid IS NULL OR id {AFTER} $9)
-- A search: lowercase text looked for in the id, kind, queue, target, error and labels.
AND ($12::text IS NULL OR strpos(id::text, $12) > 0 OR strpos(lower(kind), $12) > 0
     OR strpos(lower(queue), $12) > 0 OR strpos(lower(COALESCE(target, '')), $12) > 0
     OR strpos(lower(COALESCE(last_error, '')), $12) > 0 OR strpos(lower(labels::text), $12) > 0)
