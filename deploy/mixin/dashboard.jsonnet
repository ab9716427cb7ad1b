// The dashboard file under deploy/grafana/ (scripts/gen-mixin).
(import 'mixin.libsonnet').grafanaDashboards
