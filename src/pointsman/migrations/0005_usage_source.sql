-- Where a record's token counts came from: "upstream" (its usage report) or "estimate".
ALTER TABLE requests ADD COLUMN IF NOT EXISTS usage_source TEXT;
