-- Newest or oldest first (JobFilter::in_order fills in the order and the cursor's side); every
-- filter but the states is optional (NULL means "any"; $1 holds every state when the filter
-- names none). One (organization, state) slice at a time, each an ordered walk of the list
-- index of its filter that stops at the page's size: the slices' pages are merged into the
-- page. A slice of finished jobs walks jobs_list_queue, _kind or _target, which hold finished
-- jobs only (the branch names their predicate so that the planner may use them); a slice of
-- waiting or running jobs walks jobs_list and checks the fields on the way.
-- The slice filters of both branches are queries/read/list_filters.sql (read.rs puts them in).
SELECT {JOB_COLUMNS} FROM (
    SELECT name AS slice_org FROM organizations WHERE $11::text IS NULL
    UNION ALL
    SELECT $11::text WHERE $11::text IS NOT NULL
) orgs
CROSS JOIN unnest($1::text[]) AS slice(slice_state)
CROSS JOIN LATERAL (
    (SELECT {JOB_COLUMNS} FROM jobs
     WHERE org = orgs.slice_org AND state = slice.slice_state
       AND state IN ('succeeded', 'failed', 'cancelled', 'expired')
       {SLICE_FILTERS}
     ORDER BY id {ORDER}
     LIMIT $10)
    UNION ALL
    (SELECT {JOB_COLUMNS} FROM jobs
     WHERE org = orgs.slice_org AND state = slice.slice_state
       AND slice.slice_state NOT IN ('succeeded', 'failed', 'cancelled', 'expired')
       {SLICE_FILTERS}
     ORDER BY id {ORDER}
     LIMIT $10)
) j
ORDER BY id {ORDER}
LIMIT $10
