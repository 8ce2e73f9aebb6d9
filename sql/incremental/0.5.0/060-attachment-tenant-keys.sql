-- A document, queue row or failed row of an attached table points at its attachment by
-- (tenant, id), not by id alone: a writer could point a document of its own tenant at
-- another tenant's attachment (the key said only that the id existed somewhere, which it
-- also told), and that tenant's rag.detach then failed in the cascade into the writer's
-- rows. rag's own code always writes the attachment's own tenant; a row that does not
-- (written by hand) keeps its document, without the link, or, a queue or failed row that
-- no worker could ever index, is removed; a WARNING counts them.
ALTER TABLE rag.attachments ADD CONSTRAINT attachments_tenant_id_key UNIQUE (tenant, id);

DO $$
DECLARE
    unlinked bigint;
    queued bigint;
    failed bigint;
    role text := current_setting('session_replication_role');
BEGIN
    -- the link only: no trigger (the release being replaced has them) re-indexes the document
    PERFORM set_config('session_replication_role', 'replica', true);
    UPDATE rag.documents AS d SET attachment_id = NULL
    WHERE d.attachment_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM rag.attachments AS a WHERE a.tenant = d.tenant AND a.id = d.attachment_id);
    GET DIAGNOSTICS unlinked = ROW_COUNT;
    DELETE FROM rag.queue AS q
    WHERE NOT EXISTS (SELECT 1 FROM rag.attachments AS a WHERE a.tenant = q.tenant AND a.id = q.attachment_id);
    GET DIAGNOSTICS queued = ROW_COUNT;
    DELETE FROM rag.errors AS e
    WHERE NOT EXISTS (SELECT 1 FROM rag.attachments AS a WHERE a.tenant = e.tenant AND a.id = e.attachment_id);
    GET DIAGNOSTICS failed = ROW_COUNT;
    PERFORM set_config('session_replication_role', role, true);
    IF unlinked + queued + failed > 0 THEN
        RAISE WARNING 'rag: % documents, % queued rows and % failed rows pointed at another tenant''s attachment',
                      unlinked, queued, failed
            USING DETAIL = 'the documents are kept without the link (attachment_id NULL); the queued and failed rows, '
                           'which no worker could index, are removed';
    END IF;
END
$$;

ALTER TABLE rag.documents DROP CONSTRAINT documents_attachment_id_fkey,
    ADD CONSTRAINT documents_attachment_fkey FOREIGN KEY (tenant, attachment_id)
        REFERENCES rag.attachments (tenant, id) ON DELETE CASCADE;
ALTER TABLE rag.queue DROP CONSTRAINT queue_attachment_id_fkey,
    ADD CONSTRAINT queue_attachment_fkey FOREIGN KEY (tenant, attachment_id)
        REFERENCES rag.attachments (tenant, id) ON DELETE CASCADE;
ALTER TABLE rag.errors DROP CONSTRAINT errors_attachment_id_fkey,
    ADD CONSTRAINT errors_attachment_fkey FOREIGN KEY (tenant, attachment_id)
        REFERENCES rag.attachments (tenant, id) ON DELETE CASCADE;
