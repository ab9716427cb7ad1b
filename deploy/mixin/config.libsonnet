// What a team tunes. Override any field from your own jsonnet:
//
//   (import 'cdb-task-exporter/mixin.libsonnet') + {
//     _config+:: { failedSeverity+: { import_data: 'critical' } },
//   }
{
  _config+:: {
    // Selects the exporter's series in every rule and panel: the scrape job's name (the
    // Kubernetes Service name when a ServiceMonitor scrapes it).
    selector: 'job="cdb-task-exporter"',

    // The products and their task families: tencentcloud_<product>_tasks_finished_total, ...
    products: ['cdb', 'cynosdb', 'postgres'],

    // Severity of a failed task, by type. A failed primary switch, master upgrade or restart
    // can leave the instance unavailable or half-changed: page. Other failures (an import, a
    // parameter change, a rollback) concern an operation someone started and is watching:
    // ticket. Types not listed (new API types, TDSQL-C and PostgreSQL types): defaultFailedSeverity.
    failedSeverity: {
      switch_dr_to_master: 'critical',
      upgrade_master: 'critical',
      reboot: 'critical',
      upgrade_ro: 'warning',
      import_data: 'warning',
      rollback: 'warning',
      batch_rollback: 'warning',
      modify_param: 'warning',
      sql_operation: 'warning',
      drop_tables: 'warning',
      open_gtid: 'warning',
      initial: 'warning',
    },
    defaultFailedSeverity: 'warning',

    // How long a task of each type may stay unfinished before it is "running too long", in
    // seconds. Restarts and primary switches take minutes; imports, rollbacks and upgrades of
    // large instances take hours. Types not listed: defaultRunningTooLongSeconds.
    runningTooLongSeconds: {
      reboot: 1800,
      switch_dr_to_master: 1800,
      modify_param: 7200,
      open_gtid: 7200,
      drop_tables: 7200,
      initial: 7200,
      sql_operation: 21600,
      import_data: 43200,
      rollback: 43200,
      batch_rollback: 43200,
      upgrade_master: 43200,
      upgrade_ro: 43200,
    },
    defaultRunningTooLongSeconds: 21600,

    // Seconds without a successful poll before the task data counts as stale.
    staleAfterSeconds: 900,
    // Share of API requests answered RequestLimitExceeded that is too much.
    throttledRatio: 0.1,
    // Clock offset from the API's, in seconds, worth fixing.
    clockSkewSeconds: 60,

    // Each alert links its section here (the anchor is the alert name in lower case).
    runbookUrl: 'https://github.com/cdb-task-exporter/cdb-task-exporter/blob/main/docs/runbook.md',

    // Where people reach the exporter's task page (/tasks), without a trailing slash: for
    // example the Service behind an HA pair, or an ingress. Empty: the alerts link the
    // exporter process that has the task (http://<its instance label>), and the dashboard's
    // task_page_url variable starts empty (set it when Grafana's users cannot reach the
    // exporters' instance addresses).
    taskPageUrl: '',

    // The dashboard.
    dashboardUid: 'cdb-task-exporter',
    dashboardTitle: 'Database tasks',
    dashboardRefresh: '1m',
  },
}
