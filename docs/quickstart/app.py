from flask import Flask, redirect, render_template_string, request
from flask_login import LoginManager, UserMixin, login_user
from flask_sqlalchemy import SQLAlchemy
from flask_utm_tracker import UTMTracker

db = SQLAlchemy()


class User(UserMixin, db.Model):
    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(255), unique=True, nullable=False)


tracker = UTMTracker(db=db, user_model=User)  # builds tracker.LeadSource and tracker.Touch on db

PAGE = """<!doctype html>
<head>{{ utm_tracker_script() }}</head>
{% if current_user.is_authenticated %}
  <p>{{ current_user.email }} came from:</p>
  <ul>{% for row in current_user.lead_sources %}
    <li>{{ row.source }} / {{ row.medium }} / {{ row.campaign }}: {{ row.channel }}</li>
  {% endfor %}</ul>
{% else %}
  <form method="post" action="/signup">
    <input name="email" type="email" required> <button>Sign up</button>
  </form>
{% endif %}"""


def create_app():
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "change-me"  # signs Flask-Login's session and the visitor cookie
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///app.db"  # instance/app.db
    db.init_app(app)
    login_manager = LoginManager(app)
    login_manager.user_loader(lambda user_id: db.session.get(User, int(user_id)))
    tracker.init_app(app)

    @app.get("/")
    def index():
        return render_template_string(PAGE)

    @app.post("/signup")
    def signup():
        email = request.form["email"]
        user = db.session.scalar(db.select(User).filter_by(email=email))
        if user is None:
            user = User(email=email)
            db.session.add(user)
            db.session.commit()
        login_user(user)  # the visitor's touches become this user's LeadSource rows
        return redirect("/")

    with app.app_context():
        db.create_all()  # the User table and the tracker's tables
    return app
