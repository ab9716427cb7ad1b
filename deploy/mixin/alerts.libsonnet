// The alerts. Each links its runbook section (_config.runbookUrl) and is unit tested in
// deploy/prometheus/tests/. Alerts about a database task or about a target's data are
// aggregated over the processes that watch it, so the two replicas of an HA pair raise one
// alert; alerts about a process (down, a rejected reload, its clock) name that process.
local lib = import 'lib.libsonnet';

{
  local c = $._config,
  local runbook(name) = '%s#%s' % [c.runbookUrl, std.asciiLower(name)],

  // Where a task's subject is shown: "cluster instance", "cluster" or "instance".
  local subject = '{{ if $labels.cluster_id }}{{ $labels.cluster_id }}{{ if $labels.instance_id }} {{ $labels.instance_id }}{{ end }}{{ else }}{{ $labels.instance_id }}{{ end }}',
  local subjectWords = '{{ with $labels.cluster_id }}cluster {{ . }} {{ end }}{{ with $labels.instance_id }}instance {{ . }} {{ end }}',

  // The task page of the alert's tasks: _config.taskPageUrl, or else the exporter process that
  // has the subject's `family` series (of an HA pair, the first by name), found by a query.
  local taskPage(family, query) =
    (if c.taskPageUrl != '' then c.taskPageUrl
     else '{{ with printf `max by (instance) (tencentcloud_%%s%s{%s, region="%%s", cluster_id="%%s", instance_id="%%s"})` $labels.product $labels.region $labels.cluster_id $labels.instance_id | query | sortByLabel "instance" }}http://{{ . | first | label "instance" }}{{ end }}' % [family, c.selector])
    + '/tasks?product={{ $labels.product }}&instance_id={{ with $labels.cluster_id }}{{ . }}{{ else }}{{ $labels.instance_id }}{{ end }}&' + query,

  local failed = 'product_region_cluster_id_instance_id_task_type:tencentcloud_tasks_failed:increase15m',
  // Age of the oldest unfinished task, per subject and type, the replicas of a pair as one.
  local ages = 'max by (%s) (\n  %s\n)' % [lib.taskKey, lib.indent(lib.perProduct(c, function(p)
    'time() - ' + lib.family(c, p, '_task_oldest_unfinished_start_timestamp_seconds')), 2)],

  prometheusAlerts+:: {
    groups+: [{
      name: 'cdb-task-exporter.alerts',
      rules: [
        {
          // No `for`: a failure is an event, counted once; the 15-minute window keeps it
          // firing long enough to be routed. Severity comes from the policy table.
          alert: 'CdbTaskFailed',
          expr: |||
            (%(failed)s > 0)
              * on (task_type) group_left (severity) task_type:cdb_task_failed_severity:config
            or on (%(key)s)
            label_replace(
              (%(failed)s > 0)
                unless on (task_type) task_type:cdb_task_failed_severity:config,
              "severity", "%(default)s", "", ""
            )
          ||| % { failed: failed, key: lib.taskKey, default: c.defaultFailedSeverity },
          annotations: {
            summary: '{{ $labels.product }} {{ $labels.task_type }} failed on ' + subject + '{{ with printf `tencentcloud_%s_instance_info{region="%s", instance_id="%s"}` $labels.product $labels.region $labels.instance_id | query }}{{ with (. | first | label "instance_name") }} ({{ . }}){{ end }}{{ end }}',
            description: '{{ printf "%.0f" $value }} {{ $labels.product }} {{ $labels.task_type }} task(s) failed on ' + subjectWords + "in {{ $labels.region }} in the last 15 minutes. The job id, error code and message are on the exporter's task page.",
            tasks: taskPage('_tasks_finished_total', 'status=failed&task_type={{ $labels.task_type }}'),
            runbook_url: runbook('CdbTaskFailed'),
          },
        },
        {
          // The age grows by itself; `for` rides out a task that finishes right at its
          // threshold between two polls.
          alert: 'CdbTaskRunningTooLong',
          expr: |||
            %(ages)s
              > on (task_type) group_left ()
            task_type:cdb_task_running_too_long_threshold_seconds:config
            or on (%(key)s)
            (
              %(ages2)s > %(default)d
                unless on (task_type) task_type:cdb_task_running_too_long_threshold_seconds:config
            )
          ||| % { ages: ages, ages2: lib.indent(ages, 2), key: lib.taskKey, default: c.defaultRunningTooLongSeconds },
          'for': '10m',
          labels: { severity: 'warning' },
          annotations: {
            summary: '{{ $labels.product }} {{ $labels.task_type }} on ' + subject + ' unfinished for {{ humanizeDuration $value }}',
            description: 'The oldest unfinished {{ $labels.product }} {{ $labels.task_type }} task on ' + subjectWords + "in {{ $labels.region }} started {{ humanizeDuration $value }} ago, longer than its type's threshold in task_type:cdb_task_running_too_long_threshold_seconds:config.",
            tasks: taskPage('_task_oldest_unfinished_start_timestamp_seconds', 'task_type={{ $labels.task_type }}&status=running&status=waiting&status=initial&status=paused'),
            runbook_url: runbook('CdbTaskRunningTooLong'),
          },
        },
        {
          // Processes whose polls of a target run and fail, none ever succeeded (a wrong key
          // from the first start): the time of the last success does not exist, so
          // staleness alone cannot see it. One alert per target and shard, whatever the
          // number of replicas that have the problem.
          alert: 'CdbTaskExporterNeverSucceeded',
          expr: 'count by (account, region, product, shard) (\n  %s\n)\n' % lib.indent(lib.withShard(c, '%s == 0\n  unless on (instance, account, region, product)\n%s' % [
            lib.exporter(c, 'last_poll_success'),
            lib.exporter(c, 'last_successful_poll_timestamp_seconds'),
          ]), 2),
          'for': '10m',
          labels: { severity: 'critical' },
          annotations: {
            summary: 'cdb-task-exporter has never polled {{ $labels.product }} in {{ $labels.account }}/{{ $labels.region }} successfully',
            description: 'Every poll of {{ $labels.product }} for account {{ $labels.account }} in {{ $labels.region }} has failed since the start of {{ $value }} exporter process(es) of shard {{ $labels.shard }}: they have no task metric for it. Their landing page shows the last error.',
            runbook_url: runbook('CdbTaskExporterNeverSucceeded'),
          },
        },
        {
          // The newest data any replica of the shard has is too old.
          alert: 'CdbTaskExporterDataStale',
          expr: 'min by (account, region, product, shard) (\n  %s\n) > %d\n' % [
            lib.indent(lib.withShard(c, 'time() - ' + lib.exporter(c, 'last_successful_poll_timestamp_seconds')), 2),
            c.staleAfterSeconds,
          ],
          'for': '5m',
          labels: { severity: 'critical' },
          annotations: {
            summary: '{{ $labels.product }} task data of {{ $labels.account }}/{{ $labels.region }} is {{ humanizeDuration $value }} old',
            description: 'The last successful poll of {{ $labels.product }} for account {{ $labels.account }} in {{ $labels.region }} by any process of shard {{ $labels.shard }} was {{ humanizeDuration $value }} ago; task alerts for it are blind until polls succeed again.',
            runbook_url: runbook('CdbTaskExporterDataStale'),
          },
        },
        {
          alert: 'CdbTaskExporterThrottled',
          expr: 'account_region_product:tencentcloud_cdb_exporter_api_throttled:ratio_rate5m > %g' % c.throttledRatio,
          'for': '15m',
          labels: { severity: 'warning' },
          annotations: {
            summary: 'The {{ $labels.product }} API throttles cdb-task-exporter for {{ $labels.account }}/{{ $labels.region }}',
            description: '{{ humanizePercentage $value }} of the API requests for account {{ $labels.account }} in {{ $labels.region }} were answered RequestLimitExceeded over the last 5 minutes.',
            runbook_url: runbook('CdbTaskExporterThrottled'),
          },
        },
        {
          // A SIGHUP found a bad config: the previous one still runs, unlike what the file says.
          alert: 'CdbTaskExporterConfigReloadFailed',
          expr: lib.exporter(c, 'config_last_reload_successful') + ' == 0',
          'for': '10m',
          labels: { severity: 'warning' },
          annotations: {
            summary: 'cdb-task-exporter {{ $labels.instance }} rejected its new configuration',
            description: 'The last reload of the configuration on {{ $labels.instance }} was rejected; the exporter still runs the configuration it had, not what its file says now.',
            runbook_url: runbook('CdbTaskExporterConfigReloadFailed'),
          },
        },
        {
          // The host's clock is off the API's: signing and windows are corrected, but every
          // other time this host keeps (its logs, its other services) is wrong too.
          alert: 'CdbTaskExporterClockSkew',
          expr: 'abs(%s) > %d' % [lib.exporter(c, 'api_clock_skew_seconds'), c.clockSkewSeconds],
          'for': '10m',
          labels: { severity: 'warning' },
          annotations: {
            summary: "The clock of {{ $labels.instance }} is {{ $value }}s off the {{ $labels.product }} API's",
            description: "The Date header of the {{ $labels.product }} API in {{ $labels.region }} says the clock of {{ $labels.instance }} differs from the API's by {{ $value }} seconds. The exporter corrects for it; fix the host's time synchronisation (NTP).",
            runbook_url: runbook('CdbTaskExporterClockSkew'),
          },
        },
        {
          // Sharded: the shards that report (HA replicas of one shard count once) do not
          // cover 0 .. total_shards - 1, so the instances of a missing shard are watched by
          // no one.
          alert: 'CdbTaskExporterShardMissing',
          expr: |||
            count by (job) (count by (job, shard) (%s))
              < max by (job) (%s)
          ||| % [lib.exporter(c, 'shard_info'), lib.exporter(c, 'total_shards')],
          'for': '10m',
          labels: { severity: 'critical' },
          annotations: {
            summary: 'Only {{ $value }} shards of cdb-task-exporter report',
            description: 'Fewer distinct shards report than total_shards says: the instances of the missing shards are watched by no exporter, and their task alerts cannot fire.',
            runbook_url: runbook('CdbTaskExporterShardMissing'),
          },
        },
        {
          // Processes of one job disagree on total_shards (a rollout half done): each hashes
          // the instances differently, so some are watched twice and some not at all.
          alert: 'CdbTaskExporterShardCountMismatch',
          expr: |||
            max by (job) (%s)
              != min by (job) (%s)
          ||| % [lib.exporter(c, 'total_shards'), lib.exporter(c, 'total_shards')],
          'for': '15m',
          labels: { severity: 'warning' },
          annotations: {
            summary: 'cdb-task-exporter processes disagree on total_shards',
            description: 'Some processes of the job run with total_shards {{ $value }} and others with another value: until every process runs one configuration, instances are split two ways.',
            runbook_url: runbook('CdbTaskExporterShardCountMismatch'),
          },
        },
        {
          // One exporter among several: each scrape target on its own.
          alert: 'CdbTaskExporterDown',
          expr: 'up{%s} == 0' % c.selector,
          'for': '5m',
          labels: { severity: 'critical' },
          annotations: {
            summary: 'cdb-task-exporter {{ $labels.instance }} is down',
            description: 'Prometheus has failed to scrape {{ $labels.instance }} for 5 minutes; the task alerts of what it watches cannot fire unless another replica of its shard runs.',
            runbook_url: runbook('CdbTaskExporterDown'),
          },
        },
        {
          // No target at all (a removed ServiceMonitor, a relabelling mistake): `up` is absent.
          alert: 'CdbTaskExporterAbsent',
          expr: 'absent(up{%s})' % c.selector,
          'for': '10m',
          labels: { severity: 'critical' },
          annotations: {
            summary: 'No cdb-task-exporter is scraped',
            description: 'Prometheus has no scrape target with %s; no task alert can fire.' % c.selector,
            runbook_url: runbook('CdbTaskExporterAbsent'),
          },
        },
      ],
    }],
  },
}
