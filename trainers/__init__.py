"""Tasks, base models, recipes and the training of one (N, s) point."""

from trainers.models import BASE_MODELS, load_tokenizer, model_summary, resolve_model, tokenize
from trainers.tasks import TASKS, TaskData, TaskSpec, load_task, task_names
