"""Small multiple-choice files in the MMLU-Pro and SuperGPQA public schemas, answers checked by hand, shared
by the reader tests, the evaluator tests and their torchrun worker."""
import json
from pathlib import Path

# (question, options, correct letter, category)
QUESTIONS = [
    ("What is 2 + 2?", ["3", "4", "5", "22"], "B", "math"),
    ("Which gas do plants take in for photosynthesis?", ["Oxygen", "Nitrogen", "Carbon dioxide"], "C", "biology"),
    ("What is the capital of France?", ["Berlin", "Madrid", "Rome", "Paris", "Lisbon"], "D", "other"),
    ("How many sides does a hexagon have?", ["5", "6", "7", "8", "9", "10", "11", "12", "4", "3"], "B", "math"),
    ("Water boils at sea level at how many degrees Celsius?", ["90", "100"], "B", "physics"),
]


def write_mmlu_pro(path: Path) -> Path:
    rows = [{"question_id": 70 + i, "question": q, "options": options, "answer": letter,
             "answer_index": "ABCDEFGHIJ".index(letter), "cot_content": "", "category": category, "src": "test"}
            for i, (q, options, letter, category) in enumerate(QUESTIONS)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_supergpqa(path: Path) -> Path:
    disciplines = {"math": "Science", "biology": "Science", "other": "History", "physics": "Engineering"}
    rows = [{"uuid": f"u{i}", "question": q, "options": options, "answer": options["ABCDEFGHIJ".index(letter)],
             "answer_letter": letter, "discipline": disciplines[category], "field": category, "subfield": category,
             "difficulty": "easy", "is_calculation": False}
            for i, (q, options, letter, category) in enumerate(QUESTIONS)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
