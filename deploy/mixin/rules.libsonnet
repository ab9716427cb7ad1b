// Recording rules: the policy tables (one constant series per task type, from _config) and
// the aggregations the alerts and the dashboard share.
local lib = import 'lib.libsonnet';

{
  local c = $._config,

  prometheusRules+:: {
    groups+: [
      {
        // Policy tables: change _config.failedSeverity or _config.runningTooLongSeconds; the
        // alerts follow.
        name: 'cdb-task-exporter.policy',
        rules: [
          {
            record: 'task_type:cdb_task_failed_severity:config',
            expr: 'vector(1)',
            labels: { task_type: t, severity: c.failedSeverity[t] },
          }
          for t in std.objectFields(c.failedSeverity)
        ] + [
          {
            record: 'task_type:cdb_task_running_too_long_threshold_seconds:config',
            expr: 'vector(%d)' % c.runningTooLongSeconds[t],
            labels: { task_type: t },
          }
          for t in std.objectFields(c.runningTooLongSeconds)
        ],
      },
      {
        name: 'cdb-task-exporter.records',
        rules: [
          {
            // Failed tasks per product, instance (or cluster) and type over 15 minutes, the
            // replicas of an HA pair counted once (max, not sum). A failed series that
            // appeared in the window already above 0 (the first task of a type TDSQL-C or
            // PostgreSQL had not shown before, failed when first seen) has no increase to
            // measure: it counts when its newest failure ended in the window.
            record: 'product_region_cluster_id_instance_id_task_type:tencentcloud_tasks_failed:increase15m',
            expr: lib.perProduct(c, function(p)
              local failed = lib.family(c, p, '_tasks_finished_total', 'status="failed"');
              local last = lib.family(c, p, '_task_last_finished_timestamp_seconds', 'status="failed"');
              |||
                max by (region, cluster_id, instance_id, task_type) (
                  increase(%(failed)s[15m]) > 0
                  or (
                    (%(failed)s > 0
                      unless %(failed)s offset 15m)
                    and (time() - %(last)s < 900)
                  )
                )
              ||| % { failed: failed, last: last }) + '\n',
          },
          {
            // Share of an account's requests the API throttled, every process that calls it
            // together (the limit is the account's). Used by CdbTaskExporterThrottled and the
            // dashboard.
            record: 'account_region_product:tencentcloud_cdb_exporter_api_throttled:ratio_rate5m',
            expr: |||
              sum by (account, region, product) (rate(%s[5m]))
              /
              sum by (account, region, product) (rate(%s[5m]))
            ||| % [
              lib.exporter(c, 'api_errors_total', 'code=~"RequestLimitExceeded.*"'),
              lib.exporter(c, 'api_requests_total'),
            ],
          },
        ],
      },
    ],
  },
}
