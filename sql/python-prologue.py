if GD.get("ragpg_lib") != "@RAGPG_LIB@":
    import sys
    _loaded = sys.modules.get("ragpg")
    if _loaded is not None and not _loaded.__file__.startswith("@RAGPG_LIB@/"):
        # ALTER EXTENSION rag UPDATE ran while this session had the old release loaded:
        # one interpreter cannot hold two releases of the package
        raise plpy.spiexceptions.ObjectNotInPrerequisiteState(
            "rag: this session loaded rag's Python from %s, and the extension now uses "
            "@RAGPG_LIB@: reconnect to use the upgraded extension" % _loaded.__file__.rsplit("/ragpg/", 1)[0])
    for _p in ("@RAGPG_LIB@/deps", "@RAGPG_LIB@"):
        if _p not in sys.path:
            sys.path.insert(0, _p)
    import ragpg.pg
    import ragpg.ask
    GD["ragpg"] = ragpg
    GD["ragpg_lib"] = "@RAGPG_LIB@"
ragpg = GD["ragpg"]
