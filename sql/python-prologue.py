if "ragpg" not in GD:
    import sys
    for _p in ("@RAGPG_LIB@/deps", "@RAGPG_LIB@"):
        if _p not in sys.path:
            sys.path.insert(0, _p)
    import ragpg.pg
    import ragpg.ask
    GD["ragpg"] = ragpg
ragpg = GD["ragpg"]
