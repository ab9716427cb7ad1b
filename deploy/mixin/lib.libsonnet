// PromQL pieces shared by the rules, the alerts and the dashboard.
{
  // The task family `suffix` of `product`: tencentcloud_<product><suffix>{<selector>, <extra>}.
  family(c, product, suffix, extra=''):
    'tencentcloud_%s%s{%s%s}' % [product, suffix, c.selector, if extra == '' then '' else ', ' + extra],

  // A self-metric of the exporter.
  exporter(c, name, extra=''):
    'tencentcloud_cdb_exporter_%s{%s%s}' % [name, c.selector, if extra == '' then '' else ', ' + extra],

  // The labels that name one task series' subject. Two replicas of one shard (an HA pair)
  // expose the same series under two `instance` labels; aggregating by these keeps one.
  taskKey: 'product, region, cluster_id, instance_id, task_type',

  // `expr` for every product, each result labelled with its product, joined by `or`.
  perProduct(c, fn):
    std.join('\nor\n', [
      'label_replace(\n  %s,\n  "product", "%s", "", ""\n)' % [$.indent(std.rstripChars(fn(p), '\n'), 2), p]
      for p in c.products
    ]),

  // Adds each process's shard as a label (tencentcloud_cdb_exporter_shard_info is always
  // exposed; an unsharded process is shard 0), so that replicas of one shard can be told
  // from other shards.
  withShard(c, expr):
    '(%s)\n  * on (job, instance) group_left (shard) %s' % [expr, self.exporter(c, 'shard_info')],

  // Indents every line of `text` but the first by `n` spaces.
  indent(text, n):
    std.join('\n' + std.repeat(' ', n), std.split(text, '\n')),
}
