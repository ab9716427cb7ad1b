// The Grafana dashboard. Every panel follows the same rules (tests/it/deploy.rs checks them,
// the end-to-end test evaluates every query against a real Prometheus):
//
// - every query filters on $job and, where the series have them, $region and $instance;
// - task series are taken once per subject (max by its labels), so the two replicas of an HA
//   pair count once;
// - instance names come from the products' instance_info through group_left, falling back to
//   the bare id when the exporter cannot list instances;
// - every stat has thresholds and a unit; every table is organised (columns named and ordered);
// - the failure and duration panels show exemplars: the data source's exemplar link (see
//   deploy/grafana/datasource.yml) opens the task on ${task_page_url}/tasks?job_id=...
{
  local c = $._config,
  local ds = { type: 'prometheus', uid: '${datasource}' },

  local task = 'job=~"$job", region=~"$region", instance_id=~"$instance", task_type=~"$task_type"',
  local regional = 'job=~"$job", region=~"$region"',
  // Self-metrics carry the product as a label.
  local product = 'job=~"$job", region=~"$region", product=~"$product"',
  local unfinished = 'undefined|initial|running|paused|waiting',
  // One task series per subject: the replicas of an HA pair expose the same series under two
  // `instance` labels. A family's name survives where the function keeps it.
  local subject = 'region, cluster_id, instance_id, task_type',

  // The task family `suffix` of every selected product: tencentcloud_<product><suffix>.
  local fam(suffix, selector=task) = '{__name__=~"tencentcloud_($product)%s", %s}' % [suffix, selector],
  local once(by, expr) = 'max by (%s) (%s)' % [by, expr],

  // Joins the instance name onto a vector that has region and instance_id; series of instances
  // without info keep their id alone.
  local info = 'max by (region, instance_id, instance_name) ({__name__=~"tencentcloud_cdb_instance_info|tencentcloud_postgres_instance_info", job=~"$job"})',
  local named(expr, by) =
    '(%s) * on (region, instance_id) group_left (instance_name) %s or on (%s) (%s)' % [expr, info, by, expr],

  local panel(kind, title, desc, x, y, w, h, targets, extra={}) = {
    type: kind,
    title: title,
    description: desc,
    datasource: ds,
    gridPos: { x: x, y: y, w: w, h: h },
    targets: [
      { datasource: ds, refId: std.char(65 + i) } + targets[i]
      for i in std.range(0, std.length(targets) - 1)
    ],
  } + extra,

  local steps(first, rest) = {
    mode: 'absolute',
    steps: [{ color: first, value: null }] + [{ color: s[1], value: s[0] } for s in rest],
  },

  local stat(title, desc, x, expr, unit, thresholds) = panel(
    'stat', title, desc, x, 1, 6, 4,
    [{ expr: expr, legendFormat: title, instant: true, range: false }],
    {
      fieldConfig: { defaults: { unit: unit, thresholds: thresholds, noValue: '0' }, overrides: [] },
      options: { colorMode: 'background', graphMode: 'none', reduceOptions: { calcs: ['lastNotNull'] } },
    },
  ),

  // exprs: [expr, legend] pairs. With exemplars, Grafana draws the job ids the series carry.
  local series(title, desc, x, y, w, exprs, unit='short', exemplars=false) = panel(
    'timeseries', title, desc, x, y, w, 8,
    [{ expr: e[0], legendFormat: e[1] } + (if exemplars then { exemplar: true } else {}) for e in exprs],
    { fieldConfig: { defaults: { unit: unit }, overrides: [] } },
  ),

  // An instant table; `columns` is [label or Value, header] pairs in display order.
  local table(title, desc, x, y, w, expr, columns, unit=null, link=null) =
    local names = { [col[0]]: col[1] for col in columns };
    panel(
      'table', title, desc, x, y, w, 8,
      [{ expr: expr, legendFormat: '', instant: true, range: false, format: 'table' }],
      {
        fieldConfig: {
          defaults: if unit == null then {} else { unit: unit },
          overrides: if link == null then [] else [{
            matcher: { id: 'byName', options: names[link[0]] },
            properties: [{ id: 'links', value: [{ title: 'Open', url: link[1] }] }],
          }],
        },
        options: { showHeader: true, sortBy: [{ displayName: std.get(names, 'Value', ''), desc: true }] },
        transformations: [{
          id: 'organize',
          options: {
            excludeByName: { Time: true, __name__: true, job: true, instance: !std.objectHas(names, 'instance') },
            indexByName: { [columns[i][0]]: i for i in std.range(0, std.length(columns) - 1) },
            renameByName: names,
          },
        }],
      },
    ),

  local variable(name, label, query) = {
    name: name,
    label: label,
    type: 'query',
    datasource: ds,
    query: { query: query, refId: name },
    definition: query,
    refresh: 2,
    includeAll: true,
    multi: true,
    allValue: '.*',
    current: { selected: true, text: ['All'], value: ['$__all'] },
    sort: 1,
  },

  // The products: a fixed list, every one selected by default.
  local productVariable = {
    name: 'product',
    label: 'Product',
    type: 'custom',
    query: std.join(',', c.products),
    options: [{ text: n, value: n, selected: false } for n in c.products],
    includeAll: true,
    multi: true,
    allValue: std.join('|', c.products),
    current: { selected: true, text: ['All'], value: ['$__all'] },
  },

  // Where Grafana's users reach the exporter's task page: the exemplar links open
  // ${task_page_url}/tasks?job_id=<the exemplar's job id>.
  local taskPageVariable = {
    local url = if c.taskPageUrl != '' then c.taskPageUrl else 'http://localhost:39236',
    name: 'task_page_url',
    label: 'Task page URL',
    description: "The exporter's address as your browser reaches it, for the exemplars' links to /tasks?job_id=...",
    type: 'textbox',
    query: url,
    current: { text: url, value: url },
    hide: 0,
  },

  local row(title, y) = {
    type: 'row', title: title, collapsed: false, gridPos: { x: 0, y: y, w: 24, h: 1 }, panels: [],
  },

  local duration = fam('_task_duration_seconds_bucket', regional + ', task_type=~"$task_type"'),
  local quantile(q) = 'histogram_quantile(%s, sum by (le, task_type) (%s))' % [
    q,
    once('le, region, task_type, status', 'rate(%s[1h])' % duration),
  ],
  local perProcess = '{{account}} {{region}} {{product}} {{instance}}',

  local panels = [
    row('Tasks', 0),
    stat('Failed tasks in range', 'Tasks that ended failed in the dashboard\'s time range.', 0,
         'sum(%s)' % once(subject, 'increase(%s[$__range])' % fam('_tasks_finished_total', task + ', status="failed"')),
         'short', steps('green', [[1, 'red']])),
    stat('Unfinished tasks now', 'Tasks initial, waiting, running or paused now.', 6,
         'sum(%s)' % once('__name__, %s, status' % subject, fam('_tasks', task + ', status=~"%s"' % unfinished)),
         'short', steps('green', [[20, 'yellow'], [100, 'orange']])),
    stat('Upgrades running now', 'Upgrades in progress (every task type with upgrade in its name).', 12,
         'sum(%s)' % once('__name__, %s, status' % subject, fam('_tasks', task + ', task_type=~".*upgrade.*", status="running"')),
         'short', steps('green', [[1, 'blue']])),
    stat('Oldest unfinished task age', 'How long the oldest unfinished task has been going (alert thresholds are per type, see the runbook).', 18,
         'max(time() - %s)' % fam('_task_oldest_unfinished_start_timestamp_seconds'),
         's', steps('green', [[7200, 'yellow'], [21600, 'orange'], [43200, 'red']])),
    series('Tasks by type and status', 'Tasks in the lookback window or unfinished, by latest status.', 0, 5, 12,
           [['label_replace(sum by (__name__, task_type, status) (%s), "product", "$1", "__name__", "tencentcloud_(.+)_tasks")' % once('__name__, %s, status' % subject, fam('_tasks')),
             '{{product}} {{task_type}} {{status}}']]),
    series('Finished tasks by status', 'Tasks that reached a terminal status. The exemplars are the last task counted: open one to see it on the task page.', 12, 5, 12,
           [['sum by (status) (%s)' % once(subject + ', status', 'increase(%s[$__rate_interval])' % fam('_tasks_finished_total')), '{{status}}']],
           exemplars=true),
    table('Failures in the last 15 minutes', 'Failed tasks per product, cluster, instance and type (the CdbTaskFailed alert\'s series), with the instance name.', 0, 13, 12,
          named('sum by (product, region, cluster_id, instance_id, task_type) (product_region_cluster_id_instance_id_task_type:tencentcloud_tasks_failed:increase15m{product=~"$product", region=~"$region", instance_id=~"$instance", task_type=~"$task_type"}) > 0',
                'product, region, cluster_id, instance_id, task_type'),
          [['product', 'Product'], ['region', 'Region'], ['cluster_id', 'Cluster'], ['instance_id', 'Instance'], ['instance_name', 'Name'], ['task_type', 'Type'], ['Value', 'Failed']]),
    table('Unfinished tasks and their age', 'Per instance and type, how long the oldest unfinished task has been going.', 12, 13, 12,
          named(once(subject, 'time() - ' + fam('_task_oldest_unfinished_start_timestamp_seconds')), subject),
          [['region', 'Region'], ['cluster_id', 'Cluster'], ['instance_id', 'Instance'], ['instance_name', 'Name'], ['task_type', 'Type'], ['Value', 'Age']], unit='s'),
    series('Task duration (median and p95)', 'EndTime - StartTime of finished tasks, by type. The exemplars are the last task each bucket counted.', 0, 21, 12,
           [[quantile('0.5'), 'p50 {{task_type}}'], [quantile('0.95'), 'p95 {{task_type}}']],
           unit='s', exemplars=true),
    table('Last finished task', 'When the newest task of each type and status ended, per instance.', 12, 21, 12,
          named(once(subject + ', status', fam('_task_last_finished_timestamp_seconds')) + ' * 1000', subject + ', status'),
          [['region', 'Region'], ['cluster_id', 'Cluster'], ['instance_id', 'Instance'], ['instance_name', 'Name'], ['task_type', 'Type'], ['status', 'Status'], ['Value', 'Ended']],
          unit='dateTimeAsIso'),
    table('Instances and clusters', "What each product's listing gives (needs its Describe permission, see docs/products.md).", 0, 29, 12,
          'max without (instance, pod) ({__name__=~"tencentcloud_cdb_instance_info|tencentcloud_postgres_instance_info|tencentcloud_cynosdb_cluster_info", %s})' % regional,
          [['region', 'Region'], ['cluster_id', 'Cluster'], ['cluster_name', 'Cluster name'], ['instance_id', 'Instance'], ['instance_name', 'Name'], ['instance_type', 'Type'], ['engine_version', 'Version'], ['db_version', 'DB version'], ['zone', 'Zone']]),
    table('Task details on the exporters', "Each exporter's task page: job ids, error codes and messages, filtered by region.", 12, 29, 12,
          'max by (instance, version) (tencentcloud_cdb_exporter_build_info{job=~"$job"})',
          [['instance', 'Exporter'], ['version', 'Version']],
          link=['instance', 'http://${__data.fields.Exporter}/tasks?${region:queryparam}']),
    row('Exporter', 37),
    series('Poll success', '1 when the last poll of the account and region succeeded, per exporter process.', 0, 38, 8,
           [['min by (account, region, product, instance) (tencentcloud_cdb_exporter_last_poll_success{%s})' % product, perProcess]]),
    series('Time since last successful poll', 'Staleness of the task data, per exporter process.', 8, 38, 8,
           [['time() - tencentcloud_cdb_exporter_last_successful_poll_timestamp_seconds{%s}' % product, perProcess]], unit='s'),
    series('Poll duration', 'Duration of the last poll.', 16, 38, 8,
           [['tencentcloud_cdb_exporter_poll_duration_seconds{%s}' % product, perProcess]], unit='s'),
    series('API requests', 'Requests per second, retries included, every process together (an HA pair makes twice the calls of one process).', 0, 46, 8,
           [['sum by (account, region, product, action) (rate(tencentcloud_cdb_exporter_api_requests_total{%s}[$__rate_interval]))' % product, '{{account}} {{region}} {{product}} {{action}}']], unit='reqps'),
    series('API errors by code', 'Errors per second by API error code.', 8, 46, 8,
           [['sum by (product, action, code) (rate(tencentcloud_cdb_exporter_api_errors_total{%s}[$__rate_interval]))' % product, '{{product}} {{action}} {{code}}']], unit='reqps'),
    series('Throttled share of requests', 'Share answered RequestLimitExceeded (the CdbTaskExporterThrottled alert fires above %g%% for 15 minutes).' % (100 * c.throttledRatio), 16, 46, 8,
           [['account_region_product:tencentcloud_cdb_exporter_api_throttled:ratio_rate5m{region=~"$region", product=~"$product"}', '{{account}} {{region}} {{product}}']], unit='percentunit'),
    series('API latency p95', '95th percentile of API request duration.', 0, 54, 8,
           [['histogram_quantile(0.95, sum by (le, product, action) (rate(tencentcloud_cdb_exporter_api_request_duration_seconds_bucket{job=~"$job", product=~"$product"}[$__rate_interval])))', '{{product}} {{action}}']], unit='s'),
    series('Tasks tracked', 'Tasks held in memory, per exporter process.', 8, 54, 8,
           [['tencentcloud_cdb_exporter_tasks_tracked{%s}' % product, perProcess]]),
    series('Memory', 'Resident memory of each exporter.', 16, 54, 8,
           [['process_resident_memory_bytes{job=~"$job"}', '{{instance}}']], unit='bytes'),
  ],

  grafanaDashboards+:: {
    'cdb-task-exporter.json': {
      title: c.dashboardTitle,
      uid: c.dashboardUid,
      tags: ['tencentcloud', 'cdb', 'cynosdb', 'postgres'],
      description: 'Tencent Cloud database background tasks (CDB for MySQL, TDSQL-C, PostgreSQL) from cdb-task-exporter. Generated from deploy/mixin.',
      editable: true,
      schemaVersion: 39,
      version: 3,
      graphTooltip: 1,
      refresh: c.dashboardRefresh,
      time: { from: 'now-24h', to: 'now' },
      templating: { list: [
        { name: 'datasource', label: 'Data source', type: 'datasource', query: 'prometheus', current: {}, hide: 0 },
        variable('job', 'Job', 'label_values(tencentcloud_cdb_exporter_build_info, job)'),
        productVariable,
        variable('region', 'Region', 'label_values(tencentcloud_cdb_exporter_last_poll_success{job=~"$job", product=~"$product"}, region)'),
        variable('instance', 'Instance', 'label_values(%s, instance_id)' % fam('_tasks', regional)),
        variable('task_type', 'Task type', 'label_values(%s, task_type)' % fam('_tasks', regional)),
        taskPageVariable,
      ] },
      annotations: { list: [] },
      panels: std.mapWithIndex(function(i, p) p { id: i + 1 }, panels),
    },
  },
}
