-- rag._shown (internal): a value as an error message shows it: quoted, NULL as NULL, and
-- cut to its first 80 characters with its length after (a message, and the server log
-- line it becomes, stay short whatever a caller passed: an application that binds its
-- parameters has its values logged nowhere else).
CREATE OR REPLACE FUNCTION rag._shown(value text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN value IS NULL THEN 'NULL'
                WHEN length(value) <= 80 THEN quote_literal(value)
                ELSE quote_literal(left(value, 80)) || '... (' || length(value) || ' characters)' END
$$;

-- rag._shown_list (internal): values as an error message lists them: each as rag._shown
-- shows it, comma-separated, the first `most` only and ", ..." after when there are more.
CREATE OR REPLACE FUNCTION rag._shown_list(vals text[], most integer DEFAULT 5)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (SELECT string_agg(rag._shown(v), ', ' ORDER BY n)
            FROM unnest(vals[1:most]) WITH ORDINALITY AS u(v, n))
           || CASE WHEN cardinality(vals) > most THEN ', ...' ELSE '' END
$$;

-- rag._is_member
-- Whether the current role is (a member of) this role; false for a dropped role.
CREATE OR REPLACE FUNCTION rag._is_member(role_name name)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles AS r
                   WHERE r.rolname = role_name AND pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))
$$;

-- rag._own_session (internal): whether this session is role `who`'s own: logged in as it, with
-- no SET ROLE or SET SESSION AUTHORIZATION since. Only then may rag read a table of that
-- role's, which runs its code (casts, types, policies): after either, that code may switch
-- back to the session's or the login's role, a superuser's say (hostile reviews 39b, 39c).
-- The login's role is this backend's activity entry's (pg_stat_get_activity of its own pid,
-- one row), which SET SESSION AUTHORIZATION leaves as it was.
CREATE OR REPLACE FUNCTION rag._own_session(who name)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT who = current_user AND who = session_user
       AND who IS NOT DISTINCT FROM (SELECT r.rolname
                                       FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) AS a
                                       JOIN pg_catalog.pg_roles AS r ON r.oid = a.usesysid)
$$;

-- rag._rows_hidden (internal): whether reading this table in this session may leave rows
-- out: row-level security active for the current role on it (Postgres' own test: a policy
-- of the table that applies to a role that is not its owner, or one forced on its owner,
-- and no BYPASSRLS). A row hidden so is not a row that is gone (hostile reviews 39c, 39d:
-- a resync with force by a role under an ordinary policy deleted the hidden rows' documents).
CREATE OR REPLACE FUNCTION rag._rows_hidden(source_table regclass)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.row_security_active(source_table)
$$;

-- rag._is_superuser (internal): whether the current role is a superuser
CREATE OR REPLACE FUNCTION rag._is_superuser()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user), false)
$$;

-- rag._may_act_for
-- Whether the current role may act for a tenant: its own name, a tenant granted to it
-- (or to a role it is a member of) in rag.tenant_roles, or any tenant for a superuser.
-- rag's group roles have no tenant of their own name: after SET ROLE rag_writer it would
-- be one tenant shared by every writer.
CREATE OR REPLACE FUNCTION rag._may_act_for(tenant text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (tenant = current_user::text AND current_user NOT IN ('rag_reader', 'rag_writer', 'rag_admin'))
        OR (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user)
        OR EXISTS (SELECT 1 FROM rag.tenant_roles AS t
                   WHERE t.tenant = _may_act_for.tenant AND rag._is_member(t.role_name))
$$;

-- rag.current_tenant
-- The tenant this session acts for (see above). Raises 42501 if rag.tenant names a
-- tenant the current role may not act for.
CREATE OR REPLACE FUNCTION rag.current_tenant()
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wanted text := nullif(btrim(current_setting('rag.tenant', true)), '');
    only_one text;
BEGIN
    IF wanted IS NULL THEN
        IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user) THEN
            SELECT min(t.tenant) INTO only_one FROM rag.tenant_roles AS t
            WHERE rag._is_member(t.role_name)
            HAVING count(DISTINCT t.tenant) = 1;
        END IF;
        IF only_one IS NULL AND current_user IN ('rag_reader', 'rag_writer', 'rag_admin') THEN
            -- SET ROLE rag_writer: the group role would be one tenant shared by all its members
            RAISE EXCEPTION 'rag: the group role % is not a tenant', current_user
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'act as your own login role (RESET ROLE), or SET rag.tenant to a tenant granted to you';
        END IF;
        RETURN coalesce(only_one, current_user::text);
    ELSIF rag._may_act_for(wanted) THEN
        RETURN wanted;
    END IF;
    RAISE EXCEPTION 'rag: role % may not act for tenant %', current_user, rag._shown(wanted)
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'RESET rag.tenant, or ask an administrator: SELECT rag.grant_tenant(role, tenant)';
END
$$;

-- rag.grant_tenant / rag.revoke_tenant (rag_admin)
-- Allow a role (and its members) to act for a tenant with SET rag.tenant, or stop it.
CREATE OR REPLACE FUNCTION rag.grant_tenant(role_name name, tenant text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF role_name IS NULL OR NOT EXISTS (SELECT 1 FROM pg_roles AS r WHERE r.rolname = grant_tenant.role_name) THEN
        RAISE EXCEPTION 'rag.grant_tenant: role % does not exist', coalesce(quote_ident(role_name), 'NULL')
            USING ERRCODE = 'undefined_object';
    ELSIF tenant IS NULL OR btrim(tenant) = '' THEN
        RAISE EXCEPTION 'rag.grant_tenant: tenant is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO rag.tenant_roles AS t (role_name, tenant) VALUES (grant_tenant.role_name, grant_tenant.tenant)
    ON CONFLICT DO NOTHING;
END
$$;

CREATE OR REPLACE FUNCTION rag.revoke_tenant(role_name name, tenant text)
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH d AS (DELETE FROM rag.tenant_roles AS t
               WHERE t.role_name = revoke_tenant.role_name AND t.tenant = revoke_tenant.tenant RETURNING 1)
    SELECT count(*) > 0 FROM d
$$;
