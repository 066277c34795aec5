-- Queues an operator paused: nothing new is claimed from them; running attempts finish.
CREATE TABLE queues (
    name       text PRIMARY KEY,
    paused     boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);
