-- Checks that a release before 0.5.0 may have bound to an operator planted where the
-- required extensions live (its scripts ran with that schema on the search path, and
-- pg_catalog has numeric >= numeric only, so a numeric >= integer there was chosen over
-- it): made again, under this script's search path (pg_catalog, pg_temp). The views are
-- made again by every upgrade; 990-search-path.sql then checks that nothing of rag's is
-- bound to a function or operator outside pg_catalog, rag and the extensions rag requires.
ALTER TABLE rag.models
    DROP CONSTRAINT models_price_input_per_1m_check,
    ADD CONSTRAINT models_price_input_per_1m_check CHECK (price_input_per_1m >= 0),
    DROP CONSTRAINT models_price_output_per_1m_check,
    ADD CONSTRAINT models_price_output_per_1m_check CHECK (price_output_per_1m >= 0);
ALTER TABLE rag.usage
    DROP CONSTRAINT usage_cost_check,
    ADD CONSTRAINT usage_cost_check CHECK (cost >= 0);
