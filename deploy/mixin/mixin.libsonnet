// cdb-task-exporter's monitoring mixin: prometheusRules, prometheusAlerts and
// grafanaDashboards, tuned through _config (config.libsonnet). The shipped rule file,
// PrometheusRule and dashboard are generated from it by scripts/gen-mixin.
(import 'config.libsonnet') +
(import 'rules.libsonnet') +
(import 'alerts.libsonnet') +
(import 'dashboards.libsonnet')
