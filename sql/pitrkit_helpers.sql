-- pitrkit helper functions, installed on the MASTER (pitrtools had cmd_standby.sql).
--
-- They let a dedicated, non-superuser role take base backups: each runs with
-- the rights of its owner (SECURITY DEFINER), so install them as a superuser.
-- pitrkit uses them when present and the built-in functions otherwise.
--
--   psql -U postgres -d postgres -f sql/pitrkit_helpers.sql
--   CREATE ROLE pitrkit_backup LOGIN PASSWORD '...';
--   GRANT USAGE ON SCHEMA pitrkit TO pitrkit_backup;
--   GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pitrkit TO pitrkit_backup;
--
-- Then master_user: pitrkit_backup in standby.ini (and a pg_hba.conf line
-- letting it connect to master_db from the standby).
--
-- Works on PostgreSQL 12-18: the backup functions pick pg_backup_start/stop
-- (15+) or non-exclusive pg_start_backup/pg_stop_backup (before 15) at run
-- time. A backup started here ends when the calling session ends.

CREATE SCHEMA IF NOT EXISTS pitrkit;
REVOKE ALL ON SCHEMA pitrkit FROM PUBLIC;

CREATE OR REPLACE FUNCTION pitrkit.data_directory() RETURNS text
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT current_setting('data_directory') $$;

CREATE OR REPLACE FUNCTION pitrkit.tablespaces(OUT oid oid, OUT name name, OUT location text)
RETURNS SETOF record
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.oid, t.spcname, pg_tablespace_location(t.oid)
    FROM pg_tablespace t
    WHERE t.spcname NOT IN ('pg_default', 'pg_global')
    ORDER BY t.oid
$$;

CREATE OR REPLACE FUNCTION pitrkit.backup_start(label text, fast boolean) RETURNS pg_lsn
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lsn pg_lsn;
BEGIN
    IF current_setting('server_version_num')::int >= 150000 THEN
        EXECUTE 'SELECT pg_backup_start($1, $2)' INTO lsn USING label, fast;
    ELSE
        EXECUTE 'SELECT pg_start_backup($1, $2, false)' INTO lsn USING label, fast;
    END IF;
    RETURN lsn;
END
$$;

CREATE OR REPLACE FUNCTION pitrkit.backup_stop(OUT lsn pg_lsn, OUT labelfile text, OUT spcmapfile text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF current_setting('server_version_num')::int >= 150000 THEN
        EXECUTE 'SELECT lsn, labelfile, spcmapfile FROM pg_backup_stop(true)' INTO lsn, labelfile, spcmapfile;
    ELSE
        EXECUTE 'SELECT lsn, labelfile, spcmapfile FROM pg_stop_backup(false, true)' INTO lsn, labelfile, spcmapfile;
    END IF;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pitrkit FROM PUBLIC;
