-- The response cache's columns: how the cache treated a request, and what a hit saved.
ALTER TABLE requests ADD COLUMN IF NOT EXISTS cache TEXT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS saved_cost DOUBLE PRECISION;
