"""ctrain: continuous training on Apache Airflow."""
