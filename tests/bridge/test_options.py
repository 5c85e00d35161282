from oslo_config import cfg

import zaqar_otel

FLAGS = ("trace_mongodb", "trace_redis", "trace_pooling", "trace_sqlalchemy")


def test_register_opts_on_a_fresh_conf_defaults_false():
    conf = cfg.ConfigOpts()
    zaqar_otel.register_opts(conf)
    conf([])
    for flag in FLAGS:
        assert getattr(conf.profiler, flag) is False
    assert conf.profiler.enabled is False


def test_register_opts_is_idempotent():
    conf = cfg.ConfigOpts()
    zaqar_otel.register_opts(conf)
    zaqar_otel.register_opts(conf)
    conf([])
    assert conf.profiler.trace_redis is False


def test_flags_are_read_from_a_config_file(tmp_path):
    path = tmp_path / "zaqar.conf"
    path.write_text("[profiler]\nenabled = true\ntrace_redis = true\nconnection_string = otel://\n")
    conf = cfg.ConfigOpts()
    zaqar_otel.register_opts(conf)
    conf(["--config-file", str(path)])
    assert conf.profiler.trace_redis is True
    assert conf.profiler.trace_mongodb is False
    assert conf.profiler.connection_string == "otel://"


def test_list_opts_serves_the_generator():
    [(group, opts)] = zaqar_otel.list_opts()
    assert group == "profiler"
    names = {opt.name for opt in opts}
    assert set(FLAGS) | {"enabled", "hmac_keys", "connection_string"} <= names
