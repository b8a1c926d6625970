"""The UI's words in English and Chinese (中文), one table, looked up by key.

A plain dictionary rather than gettext catalogues: two languages, a few hundred words,
no build step, and a test can check that every key has both. Data (concept names,
source values, check ids) is shown as it is in the lake, never translated.
"""

from __future__ import annotations

LANGUAGES = ("en", "zh")

WORDS: dict[str, tuple[str, str]] = {
    # frame
    "app.tagline": ("Research data platform", "科研数据平台"),
    "nav.dashboard": ("Dashboard", "总览"),
    "nav.cohorts": ("Cohort builder", "队列构建"),
    "nav.person": ("Patient timeline", "患者时间线"),
    "nav.empi": ("EMPI review", "患者主索引审核"),
    "nav.analyses": ("Analyses", "分析结果"),
    "nav.qc": ("Data quality", "数据质量"),
    "nav.audit": ("Audit trail", "审计日志"),
    "nav.signout": ("Sign out", "退出"),
    "nav.language": ("中文", "English"),
    "signed_in_as": ("Signed in as", "当前用户"),
    "json_twin": ("JSON", "JSON"),
    "none": ("None", "无"),
    "total": ("Total", "合计"),
    # sign in
    "login.title": ("Sign in", "登录"),
    "login.user": ("User name", "用户名"),
    "login.token": ("API token", "API 令牌"),
    "login.submit": ("Sign in", "登录"),
    "login.help": (
        "Ask an administrator for a token (medlake user token NAME).",
        "请向管理员申请令牌（medlake user token 用户名）。",
    ),
    "login.failed": ("Sign-in failed", "登录失败"),
    # errors
    "error.title": ("Not allowed", "无权访问"),
    "error.back": ("Back to the dashboard", "返回总览"),
    # dashboard
    "dash.title": ("Dashboard", "总览"),
    "dash.records_by_source": ("Records by source over time", "各来源系统记录量（按时间）"),
    "dash.batches": ("Last batches", "最近批次"),
    "dash.quarantine": ("Quarantine", "隔离区"),
    "dash.qc": ("Data-quality status", "数据质量状态"),
    "dash.lake": ("Lake", "数据湖"),
    "dash.tables": ("Tables with rows", "有数据的表"),
    "dash.persons": ("Persons", "人数"),
    "dash.schema": ("Schema version", "模式版本"),
    "dash.no_qc": ("No data-quality run yet.", "尚未运行数据质量检查。"),
    "dash.recent_events": ("Latest audit events", "最新审计事件"),
    "dash.open_entries": ("open entries", "条未处理"),
    "col.source": ("Source", "来源系统"),
    "col.day": ("Day", "日期"),
    "col.records": ("Records", "记录数"),
    "col.file": ("File", "文件"),
    "col.format": ("Format", "格式"),
    "col.received": ("Received", "接收时间"),
    "col.status": ("Status", "状态"),
    "col.loaded": ("Loaded", "已加载"),
    "col.quarantined": ("Quarantined", "已隔离"),
    "col.reason": ("Reason", "原因"),
    "col.entries": ("Entries", "条数"),
    "col.check": ("Check", "检查项"),
    "col.violating": ("Rows violating", "违规行数"),
    "col.pct": ("% violating", "违规比例 %"),
    "col.threshold": ("Threshold %", "阈值 %"),
    "qc.passed": ("passed", "通过"),
    "qc.failed": ("failed", "未通过"),
    "qc.run": ("Run", "运行"),
    # cohorts
    "cohort.title": ("Cohort builder", "队列构建"),
    "cohort.name": ("Cohort name", "队列名称"),
    "cohort.entry": ("Entry event", "入组事件"),
    "cohort.domain": ("Domain", "域"),
    "cohort.concepts": ("Concepts", "概念"),
    "cohort.search": ("Search concepts (code or name)", "搜索概念（编码或名称）"),
    "cohort.descendants": ("with descendants", "含下位概念"),
    "cohort.first": ("first occurrence only", "仅首次出现"),
    "cohort.rules": ("Inclusion rules", "纳入规则"),
    "cohort.add_rule": ("Add rule", "添加规则"),
    "cohort.rule_name": ("Rule name", "规则名称"),
    "cohort.window": ("Days before / after entry", "入组前/后天数"),
    "cohort.value": ("Value", "数值"),
    "cohort.age": ("Age at entry", "入组年龄"),
    "cohort.remove": ("Remove", "删除"),
    "cohort.attrition": ("Attrition", "逐步筛选"),
    "cohort.step": ("Step", "步骤"),
    "cohort.remaining": ("Remaining", "剩余人数"),
    "cohort.excluded": ("Excluded", "排除"),
    "cohort.initial": ("Entry events", "入组事件"),
    "cohort.counting": ("Counting…", "计数中…"),
    "cohort.suppressed": (
        "Counts under the small-cell threshold show as <N.",
        "低于小单元阈值的计数显示为 <N。",
    ),
    "cohort.definition": ("Definition (JSON)", "定义（JSON）"),
    "cohort.saved": ("Saved definitions", "已保存的定义"),
    "cohort.example": ("Load the example", "载入示例"),
    "cohort.any_concept": ("any concept in the domain", "该域任意概念"),
    # person
    "person.title": ("Patient timeline", "患者时间线"),
    "person.open": ("Open", "打开"),
    "person.id": ("Person id", "人员 ID"),
    "person.born": ("Year of birth", "出生年份"),
    "person.gender": ("Gender", "性别"),
    "person.death": ("Death", "死亡日期"),
    "person.linked": ("Linked source records", "关联的来源记录"),
    "person.source_patient": ("Source patient", "来源患者 ID"),
    "person.first_seen": ("First seen", "首次出现"),
    "person.last_seen": ("Last seen", "最近出现"),
    "person.items": ("Items by domain", "按域分组的条目"),
    "person.omics": ("Omics samples", "组学样本"),
    "person.zoom": ("Drag to zoom, double-click to reset.", "拖动缩放，双击复原。"),
    "col.date": ("Date", "日期"),
    "col.end": ("End", "结束"),
    "col.concept": ("Concept", "概念"),
    "col.source_value": ("Source value", "源值"),
    "col.values": ("Values", "数值"),
    "col.record": ("Source record", "来源记录"),
    # empi
    "empi.title": ("EMPI review", "患者主索引审核"),
    "empi.queue": ("Pairs waiting", "待审核"),
    "empi.probability": ("Match probability", "匹配概率"),
    "empi.field": ("Field", "字段"),
    "empi.left": ("Left record", "左侧记录"),
    "empi.right": ("Right record", "右侧记录"),
    "empi.evidence": ("Evidence", "证据"),
    "empi.match": ("Match", "是同一人"),
    "empi.no_match": ("Not a match", "不是同一人"),
    "empi.keys": ("Keys: m = match, n = not a match", "快捷键：m = 是同一人，n = 不是同一人"),
    "empi.empty": ("The review queue is empty.", "审核队列为空。"),
    "empi.decided": ("Decided", "已决定"),
    # analyses
    "an.title": ("Analyses", "分析结果"),
    "an.kind": ("Kind", "类型"),
    "an.name": ("Result", "结果"),
    "an.modified": ("Written", "生成时间"),
    "an.rows": ("Rows", "行数"),
    "an.empty": ("No analysis results yet.", "暂无分析结果。"),
    "an.manhattan": ("Manhattan plot", "曼哈顿图"),
    "an.qq": ("QQ plot", "QQ 图"),
    "an.volcano": ("Volcano plot", "火山图"),
    "an.top": ("Top hits", "显著结果"),
    "an.lambda": ("λGC", "λGC"),
    "an.variants": ("Variants", "变异数"),
    "an.genes": ("Genes", "基因数"),
    "an.significant": ("Significant", "显著"),
    # qc
    "qc.title": ("Data-quality report", "数据质量报告"),
    "qc.category": ("Category", "类别"),
    "qc.table": ("Table", "表"),
    "qc.all_checks": ("All checks", "全部检查"),
    "qc.shown": ("Checks shown", "显示的检查项"),
    "qc.only_failed": ("Only failed", "仅未通过"),
    # audit
    "audit.title": ("Audit search", "审计检索"),
    "audit.actor": ("Actor", "操作者"),
    "audit.action": ("Action", "操作"),
    "audit.outcome": ("Outcome", "结果"),
    "audit.person": ("Person id", "人员 ID"),
    "audit.object": ("Object", "对象"),
    "audit.time": ("Time (UTC)", "时间（UTC）"),
    "audit.search": ("Search", "检索"),
    "audit.detail": ("Detail", "详情"),
    "audit.chain": ("Hash chain", "哈希链"),
    "audit.intact": ("intact", "完整"),
    "audit.broken": ("BROKEN", "已损坏"),
}


def translate(key: str, language: str) -> str:
    """``key`` in ``language``; the key itself when unknown (visible, so it gets fixed)."""
    pair = WORDS.get(key)
    if pair is None:
        return key
    return pair[1] if language == "zh" else pair[0]


def pick(language: str | None, default: str) -> str:
    """A supported language: ``language`` if it is one, else ``default``."""
    return language if language in LANGUAGES else default
