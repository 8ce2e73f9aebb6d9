-- Tenancy: every row of tenant data carries a tenant, and row-level security (see
-- 900-security.sql) shows each session only its own tenant's rows.
--
-- The tenant of a session is never taken from a function argument:
--   * SET rag.tenant = 'acme' is honoured only if the current role may act for 'acme'
--     (a row in rag.tenant_roles for the role or a role it is a member of);
--   * unset, it is the role's only tenant in rag.tenant_roles, or else the role's own name
--     (a superuser, a member of every role, always gets its own name).

CREATE TABLE rag.tenant_roles (
    tenant     text NOT NULL CHECK (btrim(tenant) <> ''),
    role_name  name NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role_name, tenant)
);
SELECT pg_catalog.pg_extension_config_dump('rag.tenant_roles', '');

-- rag._is_member
-- Whether the current role is (a member of) this role; false for a dropped role.
CREATE FUNCTION rag._is_member(role_name name)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles AS r
                   WHERE r.rolname = role_name AND pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))
$$;

-- rag._may_act_for
-- Whether the current role may act for a tenant: its own name, a tenant granted to it
-- (or to a role it is a member of) in rag.tenant_roles, or any tenant for a superuser.
CREATE FUNCTION rag._may_act_for(tenant text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tenant = current_user::text
        OR (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user)
        OR EXISTS (SELECT 1 FROM rag.tenant_roles AS t
                   WHERE t.tenant = _may_act_for.tenant AND rag._is_member(t.role_name))
$$;

-- rag.current_tenant
-- The tenant this session acts for (see above). Raises 42501 if rag.tenant names a
-- tenant the current role may not act for.
CREATE FUNCTION rag.current_tenant()
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
        RETURN coalesce(only_one, current_user::text);
    ELSIF rag._may_act_for(wanted) THEN
        RETURN wanted;
    END IF;
    RAISE EXCEPTION 'rag: role % may not act for tenant %', current_user, quote_literal(wanted)
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'RESET rag.tenant, or ask an administrator: SELECT rag.grant_tenant(role, tenant)';
END
$$;
