-- Newest or oldest first (JobFilter::in_order fills in the order and the cursor's side); every
-- filter but the states is optional (NULL means "any"; $1 holds every state when the filter
-- names none). One (organization, state) slice at a time, each an ordered walk of the list
-- index of its filter (jobs_list, jobs_list_queue, ...) that stops at the page's size: the
-- slices' pages are merged into the page.
SELECT {JOB_COLUMNS} FROM (
    SELECT name AS slice_org FROM organizations WHERE $11::text IS NULL
    UNION ALL
    SELECT $11::text WHERE $11::text IS NOT NULL
) orgs
CROSS JOIN unnest($1::text[]) AS slice(slice_state)
CROSS JOIN LATERAL (
    SELECT {JOB_COLUMNS} FROM jobs
    WHERE org = orgs.slice_org AND state = slice.slice_state
      AND ($2::text IS NULL OR queue = $2)
      AND ($3::text IS NULL OR kind = $3)
      AND ($4::text IS NULL OR target = $4)
      AND ($5::text IS NULL OR labels @> jsonb_build_object($5::text, $6::text))
      AND ($7::timestamptz IS NULL OR created_at >= $7)
      AND ($8::timestamptz IS NULL OR created_at < $8)
      AND ($9::uuid IS NULL OR id {AFTER} $9)
      -- A search: lowercase text looked for in the id, kind, queue, target, error and labels.
      AND ($12::text IS NULL OR strpos(id::text, $12) > 0 OR strpos(lower(kind), $12) > 0
           OR strpos(lower(queue), $12) > 0 OR strpos(lower(COALESCE(target, '')), $12) > 0
           OR strpos(lower(COALESCE(last_error, '')), $12) > 0 OR strpos(lower(labels::text), $12) > 0)
    ORDER BY id {ORDER}
    LIMIT $10
) j
ORDER BY id {ORDER}
LIMIT $10
