"""Search: finding the steering configuration that scores best.

This room owns the search space and candidates, the strategies that propose
them, the keep rules and statistics that decide what is kept, the metrics and
the evaluator that score a candidate, the runner with its log, results,
executors (in process, Ray) and progress display, and the plots of a log.

It may import :mod:`autosteer.steering` (to apply a candidate), never the other
way round.
"""
