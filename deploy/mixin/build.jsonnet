// The rule files under deploy/ that come from the mixin; `jsonnet -S -m deploy` writes them
// (scripts/gen-mixin, which writes the dashboard from dashboard.jsonnet).
local mixin = import 'mixin.libsonnet';
local groups = std.manifestYamlDoc(
  { groups: mixin.prometheusRules.groups + mixin.prometheusAlerts.groups },
  indent_array_in_object=true,
  quote_keys=false,
);
local header = |||
  # Generated from deploy/mixin by scripts/gen-mixin; do not edit. Tune the thresholds,
  # severities and selector in deploy/mixin/config.libsonnet, or import the mixin and
  # override its _config. Unit tested in deploy/prometheus/tests/.
|||;
local indented(text) = std.join('\n', ['  ' + l for l in std.split(text, '\n')]);

{
  'prometheus/rules/cdb-task-exporter.rules.yml': header + groups,
  'kubernetes/common/prometheusrule.yaml': header + |||
    apiVersion: monitoring.coreos.com/v1
    kind: PrometheusRule
    metadata:
      name: cdb-task-exporter
      labels:
        app.kubernetes.io/name: cdb-task-exporter
    spec:
  ||| + indented(groups),
}
