-- rag.errors and rag.queue by (tenant, attachment_id), the key their rows go by when their
-- attachment goes (ON DELETE CASCADE: rag.detach, rag.erase_tenant) and that
-- rag.retry_errors reads by: without it each attachment removed scanned every tenant's
-- errors (hostile review 37: 300 attachments beside 300,000 errors of another tenant, 9 s).
CREATE INDEX errors_attachment ON rag.errors (tenant, attachment_id);
CREATE INDEX queue_attachment ON rag.queue (tenant, attachment_id);
