"""Data: corpus -> proxy-scored documents -> next-token-reasoning samples and prompts (Section 3.3, Appendix D)."""
from rpt.data.corpus import BadRecordReport, Document, make_sample, read_documents
from rpt.data.entropy import DIFFICULTY_THRESHOLDS, score_documents, select_positions, topk_entropy
from rpt.data.prompts import TEMPLATES, build_prompt_ids, fill_template
from rpt.data.sample import Sample
from rpt.data.samples_io import SampleStream, read_manifest, read_samples

__all__ = ["BadRecordReport", "DIFFICULTY_THRESHOLDS", "Document", "Sample", "SampleStream", "TEMPLATES",
           "build_prompt_ids", "fill_template", "make_sample", "read_documents", "read_manifest", "read_samples",
           "score_documents", "select_positions", "topk_entropy"]
