"""The demo site: a landing page, sign-up and login, an account page listing the user's lead
sources and purchases (with a "buy" button that records a conversion) and the user's invite link,
an invite page saying who invited, and the dashboard for the admin (users named by their email).

    flask --app demo run                 # SQLite in instance/demo.db
    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test flask --app demo run

The first account is the admin (it can open the dashboard at /utm/).
"""

from __future__ import annotations

import os
import secrets
import typing as t

import sqlalchemy as sa
from flask import (
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from flask_sqlalchemy import SQLAlchemy
from flask_utm_tracker import UTMTracker, stash_touch
from itsdangerous import BadSignature, URLSafeSerializer
from werkzeug.security import check_password_hash, generate_password_hash

db = SQLAlchemy()


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"
    id = sa.Column(sa.Integer, primary_key=True)
    email = sa.Column(sa.String(200), unique=True, nullable=False)
    password_hash = sa.Column(sa.String(300), nullable=False)
    is_admin = sa.Column(sa.Boolean, nullable=False, default=False)


tracker = UTMTracker(db=db, user_model=User)
login_manager = LoginManager()
login_manager.login_view = "login"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


@tracker.dashboard_permission
def admin_only() -> bool:
    return bool(current_user.is_authenticated and current_user.is_admin)


@tracker.user_label
def user_email(user: User) -> str:
    # The dashboard's user column shows this instead of the primary key.
    return str(user.email)


def _invites() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key, salt="demo-invite")


def invite_code(user: User) -> str:
    """The user's invite code: their id, signed, so a code cannot be guessed from another."""
    return str(_invites().dumps(user.id))


def inviter_of(code: str) -> User | None:
    try:
        user_id = _invites().loads(code)
    except BadSignature:
        return None
    return db.session.get(User, user_id) if isinstance(user_id, int) else None


def current_inviter() -> User | None:
    """Who invited this browser (kept in the session by the invite page), if anyone."""
    user_id = session.get("invited_by")
    return db.session.get(User, user_id) if isinstance(user_id, int) else None


def create_app(config: t.Mapping[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY", "demo-only-not-secret"),
        SQLALCHEMY_DATABASE_URI=os.environ.get(
            "DATABASE_URL", f"sqlite:///{os.path.join(app.instance_path, 'demo.db')}"
        ),
        UTM_TRACKER_CUSTOM_TAGS=["ref"],
    )
    app.config.update(config or {})
    db.init_app(app)
    login_manager.init_app(app)
    tracker.init_app(app)

    @app.route("/")
    def landing() -> str:
        first = db.session.scalar(sa.select(User).order_by(User.id).limit(1))
        return render_template("landing.html", example_inviter=first, invite_code=invite_code)

    @app.route("/invite/<code>")
    def invite(code: str) -> t.Any:
        inviter = inviter_of(code)
        if inviter is None:
            abort(404)
        # The referral-program recipe: an invite link becomes a touch of its own.
        stash_touch(source="invite", medium="referral", campaign="friends", term=code)
        session["invited_by"] = inviter.id
        return render_template("invite.html", inviter=inviter)

    @app.errorhandler(404)
    def not_found(error: t.Any) -> t.Any:
        return render_template("not_found.html"), 404

    @app.route("/signup", methods=["GET", "POST"])
    def signup() -> t.Any:
        if request.method == "POST":
            email = request.form.get("email", "").strip().lower()
            password = request.form.get("password", "")
            if not email or "@" not in email or len(password) < 4:
                flash("Enter an email address and a password of at least 4 characters.")
            elif db.session.scalar(sa.select(User).where(User.email == email)):
                flash("That email address already has an account: log in instead.")
            else:
                first = db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0
                user = User(
                    email=email, password_hash=generate_password_hash(password), is_admin=first
                )
                db.session.add(user)
                db.session.commit()
                session.pop("invited_by", None)
                login_user(user)
                return redirect(url_for("account"))
        return render_template("signup.html", mode="signup", inviter=current_inviter())

    @app.route("/login", methods=["GET", "POST"])
    def login() -> t.Any:
        if request.method == "POST":
            email = request.form.get("email", "").strip().lower()
            user = db.session.scalar(sa.select(User).where(User.email == email))
            if user and check_password_hash(user.password_hash, request.form.get("password", "")):
                login_user(user)
                return redirect(url_for("account"))
            flash("Wrong email address or password.")
        return render_template("signup.html", mode="login", inviter=None)

    @app.route("/logout", methods=["POST"])
    def logout() -> t.Any:
        logout_user()
        return redirect(url_for("landing"))

    @app.route("/account")
    @login_required
    def account() -> str:
        lead = tracker.LeadSource
        sources = db.session.scalars(
            sa.select(lead).where(lead.user_id == current_user.id).order_by(lead.timestamp)
        ).all()
        conversion = tracker.Conversion
        purchases = db.session.scalars(
            sa.select(conversion)
            .where(conversion.user_id == current_user.id)
            .order_by(conversion.occurred_at.desc())
        ).all()
        return render_template(
            "account.html",
            sources=sources,
            purchases=purchases,
            invite_url=url_for("invite", code=invite_code(current_user), _external=True),
        )

    @app.route("/buy", methods=["POST"])
    @login_required
    def buy() -> t.Any:
        # A purchase as a shop records it once paid: the order id makes a retry harmless.
        order_id = request.form.get("order_id") or f"demo-{secrets.token_hex(6)}"
        try:
            tracker.record_conversion(
                current_user, "purchase", value=49.90, currency="USD", order_id=order_id
            )
        except ValueError as err:
            flash(str(err))
        else:
            flash("Thank you for your order: one rocket, 49.90 USD.")
        return redirect(url_for("account"))

    with app.app_context():
        db.create_all()
    return app


app = create_app()
